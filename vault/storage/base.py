"""The Storage contract every backend fulfils (checked by tests/test_storage.py on all of them).

Keys are '/'-separated relative names made only by `vault.layout`. The contract:

- put(key, data): atomic — a reader sees the old object, no object, or all of `data`, never a
  part. Durable when it returns. With if_absent=True it raises ObjectExists instead of
  replacing an existing object.
- get(key, offset, length): the bytes [offset, offset+length) (to the end when length is None);
  ObjectNotFound when the key does not exist. A range past the end returns what exists.
- stat(key): ObjectInfo; ObjectNotFound when missing.
- list(prefix): every object whose key starts with prefix, in no particular order.
- delete(key): idempotent; deleting a missing key is not an error.

Backends translate their own errors into vault.errors.StorageError subclasses at this boundary.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


class Storage(Protocol):
    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None: ...

    def get(self, key: str, *, offset: int = 0, length: int | None = None) -> bytes: ...

    def stat(self, key: str) -> ObjectInfo: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def delete(self, key: str) -> None: ...

    def location(self) -> str:
        """A human-readable location for messages (never containing credentials)."""
        ...
