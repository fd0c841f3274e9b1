"""An in-memory backend for tests and fault-injection wrappers."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from vault.errors import ObjectExists, ObjectNotFound
from vault.storage.base import ObjectInfo


class MemoryStorage:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        with self._lock:
            if if_absent and key in self.objects:
                raise ObjectExists(key)
            self.objects[key] = bytes(data)

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
            return ObjectInfo(key, len(self.objects[key]))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        with self._lock:
            items = [ObjectInfo(k, len(v)) for k, v in self.objects.items() if k.startswith(prefix)]
        return iter(items)

    def delete(self, key: str) -> None:
        with self._lock:
            self.objects.pop(key, None)

    def location(self) -> str:
        return "memory"
