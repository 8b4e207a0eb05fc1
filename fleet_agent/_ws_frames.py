"""Client frames of the agent's WebSocket (RFC 6455 §5): final, masked, one per message.

Masking keys come from ``os.urandom``, drawn 1,024 at a time. A payload up to 1 KiB is
masked with one big-integer XOR, a longer one in place by aiohttp's compiled mask when
it is installed (checked once against a known answer), else with four byte
translations.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Final

__all__ = ["OP_BINARY", "OP_CLOSE", "OP_CONT", "OP_PING", "OP_PONG", "OP_TEXT", "client_frame"]

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_KEYS_PER_DRAW: Final = 1024
_INT_MASK_MAX: Final = 1024


class _Keys:
    """Masking keys from the OS's entropy, drawn 1,024 at a time."""

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def next(self) -> bytes:
        at = self._at
        if at >= len(self._pool):
            self._pool, at = os.urandom(4 * _KEYS_PER_DRAW), 0
        self._at = at + 4
        return self._pool[at : at + 4]


_KEYS: Final = _Keys()


@functools.cache
def _xor(key_byte: int) -> bytes:
    """The translation table XOR-ing every byte with ``key_byte``."""
    return bytes(value ^ key_byte for value in range(256))


def _translated(key: bytes, data: bytearray) -> None:
    """Mask ``data`` in place with four byte translations (3 ns a byte)."""
    a, b, c, d = (_xor(n) for n in key)
    data[::4] = data[::4].translate(a)
    data[1::4] = data[1::4].translate(b)
    data[2::4] = data[2::4].translate(c)
    data[3::4] = data[3::4].translate(d)


def _compiled_mask() -> Callable[[bytes, bytearray], None]:
    """The compiled in-place mask aiohttp ships (0.1 ns a byte), when it is there;
    else :func:`_translated`."""
    try:
        from aiohttp._websocket.mask import (  # type: ignore[import-not-found]
            _websocket_mask_cython as compiled,
        )
    except ImportError:
        return _translated
    probe = bytearray(b"\x00" * 5)
    compiled(b"\x01\x02\x03\x04", probe)
    return compiled if probe == b"\x01\x02\x03\x04\x01" else _translated


_MASK_IN_PLACE: Final = _compiled_mask()


def _masked(payload: bytes, key: bytes) -> bytes | bytearray:
    size = len(payload)
    if size <= _INT_MASK_MAX:  # one big-int XOR: half the cost of four translations
        mask = int.from_bytes((key * ((size >> 2) + 1))[:size], "big")
        return (int.from_bytes(payload, "big") ^ mask).to_bytes(size, "big")
    data = bytearray(payload)
    _MASK_IN_PLACE(key, data)
    return data


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked frame."""
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    key = _KEYS.next()
    return b"".join((head, key, _masked(payload, key)))
