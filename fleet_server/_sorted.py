"""A sorted sequence kept in chunks, so an insert or a removal moves at most one chunk.

A plain sorted ``list`` with ``bisect.insort`` and ``del`` moves every element after the
position, O(n) per update: at 18,000 instances of one room type the placement index
moved 140 KiB of pointers twice for every poll that changed an instance's load (4 % of
the orchestrator's CPU then, and growing with the fleet). Here each update moves at most
:data:`CHUNK` pointers (O(log n) comparisons to find them); positions are still
available (:meth:`SortedChunks.bisect_left`, indexing, :meth:`SortedChunks.slice`)
through chunk offsets rebuilt lazily after a change, O(n / CHUNK).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator
from typing import Any, Final, Generic, Protocol, TypeVar

__all__ = ["CHUNK", "SortedChunks"]

CHUNK: Final = 512  # a chunk splits in two past twice this


class _Comparable(Protocol):
    def __lt__(self, other: Any, /) -> bool: ...


T = TypeVar("T", bound=_Comparable)


class SortedChunks(Generic[T]):
    """Sorted items (duplicates allowed) in chunks of at most ``2 * CHUNK``."""

    __slots__ = ("_chunks", "_len", "_maxes", "_offsets")

    def __init__(self, items: Iterable[T] = ()) -> None:
        ordered = sorted(items)
        self._chunks: list[list[T]] = [
            ordered[i : i + CHUNK] for i in range(0, len(ordered), CHUNK)
        ]
        self._maxes: list[T] = [chunk[-1] for chunk in self._chunks]
        self._len = len(ordered)
        self._offsets: list[int] | None = None

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[T]:
        return itertools.chain.from_iterable(self._chunks)

    def add(self, item: T) -> None:
        chunks, maxes = self._chunks, self._maxes
        self._len += 1
        self._offsets = None
        if not chunks:
            chunks.append([item])
            maxes.append(item)
            return
        index = bisect.bisect_left(maxes, item)
        if index == len(maxes):
            index -= 1
            chunks[index].append(item)
            maxes[index] = item
        else:
            bisect.insort(chunks[index], item)
        chunk = chunks[index]
        if len(chunk) > 2 * CHUNK:
            half = len(chunk) // 2
            chunks.insert(index + 1, chunk[half:])
            del chunk[half:]
            maxes.insert(index, chunk[-1])

    def remove(self, item: T) -> bool:
        """Remove one item equal to ``item``; False when there is none."""
        chunks, maxes = self._chunks, self._maxes
        index = bisect.bisect_left(maxes, item)
        if index == len(maxes):
            return False
        chunk = chunks[index]
        position = bisect.bisect_left(chunk, item)
        if chunk[position] != item:
            return False
        del chunk[position]
        self._len -= 1
        self._offsets = None
        if not chunk:
            del chunks[index]
            del maxes[index]
        elif position == len(chunk):
            maxes[index] = chunk[-1]
        return True

    # --- positions ------------------------------------------------------------------

    def _starts(self) -> list[int]:
        offsets = self._offsets
        if offsets is None:
            offsets = [0, *itertools.accumulate(len(chunk) for chunk in self._chunks)]
            self._offsets = offsets
        return offsets

    def bisect_left(self, item: Any) -> int:
        """The position ``item`` (anything comparable with the items) would be inserted
        at, before any equal item."""
        chunks = self._chunks
        if len(chunks) == 1:  # up to 2 * CHUNK items: positions are the chunk's own
            return bisect.bisect_left(chunks[0], item)
        index = bisect.bisect_left(self._maxes, item)
        if index == len(self._maxes):
            return self._len
        return self._starts()[index] + bisect.bisect_left(chunks[index], item)

    def __getitem__(self, position: int) -> T:
        if not 0 <= position < self._len:
            raise IndexError("SortedChunks index out of range")
        if len(self._chunks) == 1:
            return self._chunks[0][position]
        starts = self._starts()
        index = bisect.bisect_right(starts, position) - 1
        return self._chunks[index][position - starts[index]]

    def slice(self, start: int, stop: int) -> list[T]:
        """The items at positions ``start`` to ``stop`` (excluded)."""
        start, stop = max(0, start), min(self._len, stop)
        if start >= stop:
            return []
        starts = self._starts()
        index = bisect.bisect_right(starts, start) - 1
        out: list[T] = []
        offset = start - starts[index]
        while len(out) < stop - start:
            chunk = self._chunks[index]
            out.extend(chunk[offset : offset + (stop - start - len(out))])
            index += 1
            offset = 0
        return out
