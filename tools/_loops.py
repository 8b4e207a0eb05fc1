"""The event loop a measured server runs on: the daemon's (uvloop) unless told otherwise.

The orchestrator under test and the floor servers take the same ``--loop`` option, so
a ratio to a floor compares work done on the same loop.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Coroutine
from typing import Any

__all__ = ["add_loop_option", "run"]


def add_loop_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop: uvloop (as the daemon runs) or the stdlib asyncio loop",
    )


def run(main: Coroutine[Any, Any, None], loop: str) -> None:
    if loop == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)
