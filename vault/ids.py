"""Random identifiers and their text form (lowercase hex)."""

from __future__ import annotations

import secrets

ID_BYTES = 32


def new_id() -> str:
    """A fresh random 256-bit object id as 64 hex characters."""
    return secrets.token_hex(ID_BYTES)


def short(object_id: str) -> str:
    """The 8-character prefix shown in tables."""
    return object_id[:8]


def is_hex_id(text: str) -> bool:
    return len(text) == 2 * ID_BYTES and all(c in "0123456789abcdef" for c in text)
