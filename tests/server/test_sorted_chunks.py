"""The chunked sorted sequence of the placement index, against a plain sorted list."""

from __future__ import annotations

import bisect
import random

from fleet_server._sorted import CHUNK, SortedChunks


def test_matches_a_sorted_list_through_inserts_and_removals() -> None:
    rng = random.Random(7)
    reference: list[tuple[int, int]] = []
    chunks: SortedChunks[tuple[int, int]] = SortedChunks()
    for step in range(6 * CHUNK):
        if rng.random() < 0.6 or not reference:
            item = (rng.randrange(40), rng.randrange(3))  # many duplicates
            bisect.insort(reference, item)
            chunks.add(item)
        else:
            item = rng.choice(reference) if rng.random() < 0.9 else (rng.randrange(40), 9)
            present = item in reference
            if present:
                reference.remove(item)
            assert chunks.remove(item) is present
        if step % 97 == 0:
            assert list(chunks) == reference
            assert len(chunks) == len(reference)
            for _ in range(10):
                probe = (rng.randrange(42), rng.randrange(4))
                assert chunks.bisect_left(probe) == bisect.bisect_left(reference, probe)
                if reference:
                    position = rng.randrange(len(reference))
                    assert chunks[position] == reference[position]
                start, stop = sorted(rng.randrange(len(reference) + 3) for _ in range(2))
                assert chunks.slice(start, stop) == reference[start:stop]


def test_built_from_items_and_empty() -> None:
    items = [(i % 13, i) for i in range(3 * CHUNK + 5)]
    chunks = SortedChunks(items)
    assert list(chunks) == sorted(items)
    assert chunks.remove((99, 0)) is False
    empty: SortedChunks[tuple[int, int]] = SortedChunks()
    assert len(empty) == 0 and empty.bisect_left((1, 1)) == 0 and empty.slice(0, 5) == []
    assert empty.remove((1, 1)) is False
