"""Local TCP ports that are free at the moment of asking."""

from __future__ import annotations

import contextlib
import socket


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports on 127.0.0.1 that nothing listened on just now."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listened on just now."""
    return free_ports(1)[0]


def free_port_pair() -> int:
    """A port p on 127.0.0.1 with p and p + 1 both free just now (``make run`` gives its
    second game server the first one's port + 1)."""
    for _ in range(200):
        base = free_port()
        if base >= 65535:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for port in (base, base + 1):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no two adjacent free ports")
