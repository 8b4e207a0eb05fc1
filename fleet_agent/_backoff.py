"""The reconnect wait: exponential backoff with full jitter, as a pure function."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from ._options import Backoff

__all__ = ["reconnect_delay"]


def reconnect_delay(
    attempt: int, backoff: Backoff, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait after the ``attempt``-th failure in a row (counted from 1).

    Uniform in ``[0, min(max_ms, initial_ms * 2**(attempt-1))]`` milliseconds, drawn with
    ``rand`` (a float in ``[0, 1)``); the caller restarts ``attempt`` at every Hello.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    initial_s = backoff.initial_ms / 1000
    max_s = backoff.max_ms / 1000
    exponent = attempt - 1
    # Past the cap the power is not computed: 2**exponent would overflow a float.
    if exponent > math.log2(max_s / initial_s):
        window_s = max_s
    else:
        window_s = min(max_s, initial_s * 2**exponent)
    return window_s * rand()
