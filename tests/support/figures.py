"""Measured figures, printed one line per scenario (``pytest -s`` shows them)."""

from __future__ import annotations

from typing import Any


def report(name: str, **figures: Any) -> None:
    """Print one line of measured figures."""
    values = " ".join(
        f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
    )
    print(f"[figures] {name}: {values}", flush=True)
