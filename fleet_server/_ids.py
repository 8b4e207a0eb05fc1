"""Room and instance identifiers: validation, generation, public encoding (SPEC §1, §7)."""

from __future__ import annotations

import os
import re
from typing import Final

__all__ = [
    "ID_ALPHABET",
    "encode_public_id",
    "generate_room_id",
    "is_valid_room_id",
    "mint_instance_id",
    "mint_node_id",
]

ID_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
_ROOM_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PUBLIC_SAFE: Final = re.compile(r"[A-Za-z0-9_-]*")
_SAFE_BYTES: Final = frozenset(ID_ALPHABET.encode())


def is_valid_room_id(room_id: str) -> bool:
    return _ROOM_ID.fullmatch(room_id) is not None


# every byte value to the alphabet's character at its low six bits
_TO_ALPHABET: Final = bytes(ord(ID_ALPHABET[b & 63]) for b in range(256))


def _random_chars(count: int) -> str:
    return os.urandom(count).translate(_TO_ALPHABET).decode("ascii")


def generate_room_id() -> str:
    """``r_`` + 21 chars of the room-id alphabet."""
    return "r_" + _random_chars(21)


def mint_instance_id() -> str:
    """``i_`` + 16 chars of the room-id alphabet; fresh for every accepted connection."""
    return "i_" + _random_chars(16)


def mint_node_id() -> str:
    """``n_`` + 12 chars of the room-id alphabet; one per orchestrator process."""
    return "n_" + _random_chars(12)


def encode_public_id(raw: str) -> str:
    """An agent-reported id as a public id: unchanged when every char is safe, else
    every UTF-8 byte outside ``[A-Za-z0-9_-]`` as ``%XX``."""
    if _PUBLIC_SAFE.fullmatch(raw):
        return raw
    return "".join(chr(b) if b in _SAFE_BYTES else f"%{b:02X}" for b in raw.encode())
