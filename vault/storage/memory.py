"""An in-memory backend for tests and fault-injection wrappers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from vault.errors import ObjectExists, ObjectNotFound, StorageError
from vault.storage.base import VERSIONS_NONE, ObjectInfo, OldVersion, Retention


class MemoryStorage:
    """In memory, with Object Lock semantics (retention blocks delete and overwrite), so that
    immutability logic can be tested without a server. `now` is injectable for that."""

    def __init__(
        self, *, object_lock: bool = False, now: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.objects: dict[str, bytes] = {}
        self.retention: dict[str, Retention] = {}
        self._object_lock = object_lock
        self._now = now
        self._lock = threading.Lock()

    def _locked(self, key: str) -> bool:
        held = self.retention.get(key)
        return held is not None and held.until > self._now()

    def put(
        self, key: str, data: bytes, *, if_absent: bool = False, retention: Retention | None = None
    ) -> None:
        if retention is not None and not self._object_lock:
            raise StorageError("this memory storage has no Object Lock")
        with self._lock:
            if if_absent and key in self.objects:
                raise ObjectExists(key)
            if self._locked(key):
                raise StorageError(f"object {key} is under Object Lock retention")
            self.objects[key] = bytes(data)
            if retention is not None:
                self.retention[key] = retention

    def get(self, key: str, *, offset: int = 0, length: int | None = None) -> bytes:
        with self._lock:
            try:
                data = self.objects[key]
            except KeyError:
                raise ObjectNotFound(key) from None
        end = len(data) if length is None else offset + length
        return data[offset:end]

    def stat(self, key: str) -> ObjectInfo:
        with self._lock:
            if key not in self.objects:
                raise ObjectNotFound(key)
            held = self.retention.get(key)
            return ObjectInfo(key, len(self.objects[key]), held.until if held else None)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        with self._lock:
            items = [ObjectInfo(k, len(v)) for k, v in self.objects.items() if k.startswith(prefix)]
        return iter(items)

    def delete(self, key: str) -> None:
        with self._lock:
            if self._locked(key):
                raise StorageError(f"object {key} is under Object Lock retention")
            self.objects.pop(key, None)
            self.retention.pop(key, None)

    def location(self) -> str:
        return "memory"

    def local_root(self) -> str | None:
        return None

    def supports_object_lock(self) -> bool:
        return self._object_lock

    def versioning(self) -> str:
        return VERSIONS_NONE

    def atomic_if_absent(self) -> bool:
        return True

    def capabilities(self) -> dict[str, str]:
        return {"backend": "memory (tests)", "object lock": str(self._object_lock)}

    def old_versions(self, prefix: str = "") -> Iterator[OldVersion]:
        return iter(())

    def delete_version(self, key: str, version_id: str) -> None:
        raise StorageError("memory storage keeps no old versions")

    def extend_retention(self, key: str, retention: Retention) -> None:
        with self._lock:
            if key not in self.objects:
                raise ObjectNotFound(key)
            held = self.retention.get(key)
            if held is None or retention.until > held.until:
                self.retention[key] = retention
