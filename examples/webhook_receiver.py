"""A webhook receiver that verifies rivalis-fleet's signatures (docs/integrations.md §2).

    python -m examples.webhook_receiver --port 8080 --secret "$WEBHOOK_SECRET"

then configure the orchestrator with ``webhooks: [{url: http://127.0.0.1:8080/fleet,
events: [room:create, room:destroy], secret: …}]``. Each verified event is printed as
one JSON line; a bad or stale signature is answered 401 and printed to stderr.
Duplicates (a retry after a lost answer) are recognised by their id and skipped.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import hmac
import json
import sys
import time
from collections.abc import Sequence

from aiohttp import web

TOLERANCE_S = 300  # refuse signatures older or newer than this (replays)


def verify(secret: str, header: str, body: bytes, now: float | None = None) -> bool:
    """Whether ``Fleet-Signature: t=<unix s>,v1=<hex>`` signs ``body`` with ``secret``."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
        presented = parts["v1"]
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > TOLERANCE_S:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(presented, expected.hexdigest())


def make_app(secret: str, path: str = "/fleet") -> web.Application:
    seen: collections.OrderedDict[str, None] = collections.OrderedDict()

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        if not verify(secret, request.headers.get("Fleet-Signature", ""), body):
            print("refused: bad or stale signature", file=sys.stderr, flush=True)
            return web.Response(status=401)
        event = json.loads(body)
        if event["id"] in seen:
            return web.Response(status=200)  # a retry of one already handled
        seen[event["id"]] = None
        if len(seen) > 10_000:
            seen.popitem(last=False)
        print(json.dumps(event, separators=(",", ":")), flush=True)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post(path, receive)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.webhook_receiver")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--path", default="/fleet")
    parser.add_argument("--secret", required=True)
    args = parser.parse_args(argv)
    web.run_app(make_app(args.secret, args.path), host=args.host, port=args.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
