"""The Storage contract every backend fulfils (checked by tests/test_storage.py on all of them).

Keys are '/'-separated relative names made only by `vault.format.layout`. The contract:

- put(key, data): atomic — a reader sees the old object, no object, or all of `data`, never a
  part. Durable when it returns. With if_absent=True it raises ObjectExists instead of
  replacing an existing object.
- get(key, offset, length): the bytes [offset, offset+length) (to the end when length is None);
  ObjectNotFound when the key does not exist. A range past the end returns what exists.
- stat(key): ObjectInfo; ObjectNotFound when missing.
- list(prefix): every object whose key starts with prefix, in no particular order.
- delete(key): idempotent; deleting a missing key is not an error. An object under Object Lock
  retention cannot be deleted: the backend raises StorageError (S3 with versioning only hides it
  behind a delete marker, so callers check retain_until before deleting).
- put(..., retention=R): the object cannot be deleted or overwritten before R.until; backends
  without Object Lock raise StorageError.
- versioning() says whether the backend keeps old versions of replaced and deleted objects;
  old_versions(prefix) lists them and delete_version removes one (for an honest key erase:
  an old version of the keyring still holds keys that were destroyed). Backends that keep no
  versions list none.

Backends translate their own errors into vault.errors.StorageError subclasses at this boundary.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    # Object Lock retention, when the backend reports it (stat on S3); None when unknown/unset.
    retain_until: datetime | None = None


@dataclass(frozen=True)
class OldVersion:
    """A noncurrent version of an object (S3 versioning): replaced or deleted, still stored."""

    key: str
    version_id: str
    size: int
    retain_until: datetime | None = None  # Object Lock on that version, when reported


# What versioning() answers.
VERSIONS_KEPT, VERSIONS_SUSPENDED, VERSIONS_NONE = "enabled", "suspended", "none"


@dataclass(frozen=True)
class Retention:
    """S3 Object Lock retention for one object: GOVERNANCE or COMPLIANCE until `until` (UTC)."""

    mode: str
    until: datetime


class Storage(Protocol):
    def put(
        self, key: str, data: bytes, *, if_absent: bool = False, retention: Retention | None = None
    ) -> None: ...

    def get(self, key: str, *, offset: int = 0, length: int | None = None) -> bytes: ...

    def stat(self, key: str) -> ObjectInfo: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def delete(self, key: str) -> None: ...

    def location(self) -> str:
        """A human-readable location for messages (never containing credentials)."""
        ...

    def local_root(self) -> str | None:
        """The local directory holding the objects, for backends that have one."""
        ...

    def supports_object_lock(self) -> bool:
        """Whether puts can carry a Retention (an S3 bucket with Object Lock enabled)."""
        ...

    def extend_retention(self, key: str, retention: Retention) -> None:
        """Move an object's retention later (never earlier); StorageError where unsupported."""
        ...

    def versioning(self) -> str:
        """VERSIONS_KEPT, VERSIONS_SUSPENDED (old versions made before stay) or VERSIONS_NONE."""
        ...

    def atomic_if_absent(self) -> bool:
        """Whether put(if_absent=True) is one conditional request the backend enforces (False
        where it falls back to check-then-write). A server may also accept the condition and
        ignore it; only a probe can tell (vault.repo.append_guard)."""
        ...

    def capabilities(self) -> dict[str, str]:
        """What the backend offers, in words for people (init's report, the evidence pack):
        backend, transport, conditional writes, versioning, Object Lock."""
        ...

    def old_versions(self, prefix: str = "") -> Iterator[OldVersion]:
        """Every noncurrent version under `prefix` (none where versions are not kept)."""
        ...

    def delete_version(self, key: str, version_id: str) -> None:
        """Remove one old version for good; StorageError when refused (Object Lock, rights)."""
        ...
