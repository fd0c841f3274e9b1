"""A wrapper that counts requests and bytes, for --json statistics and economy tests.

Counts are per call of the Storage interface (a listing is one call however many pages it
takes); the S3 backend additionally counts the HTTP requests it really sent, retries included.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

from vault.storage.base import ObjectInfo, OldVersion, Retention, Storage


class CountingStorage:
    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.bytes_uploaded = 0
        self.bytes_downloaded = 0
        self._lock = threading.Lock()

    def _count(self, name: str, up: int = 0, down: int = 0) -> None:
        with self._lock:
            self.calls[name] += 1
            self.bytes_uploaded += up
            self.bytes_downloaded += down

    def put(
        self, key: str, data: bytes, *, if_absent: bool = False, retention: Retention | None = None
    ) -> None:
        self._count("put", up=len(data))
        self.inner.put(key, data, if_absent=if_absent, retention=retention)

    def get(self, key: str, *, offset: int = 0, length: int | None = None) -> bytes:
        data = self.inner.get(key, offset=offset, length=length)
        self._count("get", down=len(data))
        return data

    def stat(self, key: str) -> ObjectInfo:
        self._count("stat")
        return self.inner.stat(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._count("list")
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self._count("delete")
        self.inner.delete(key)

    def location(self) -> str:
        return self.inner.location()

    def local_root(self) -> str | None:
        return self.inner.local_root()

    def supports_object_lock(self) -> bool:
        return self.inner.supports_object_lock()

    def extend_retention(self, key: str, retention: Retention) -> None:
        self._count("extend_retention")
        self.inner.extend_retention(key, retention)

    def versioning(self) -> str:
        self._count("versioning")
        return self.inner.versioning()

    def atomic_if_absent(self) -> bool:
        return self.inner.atomic_if_absent()

    def capabilities(self) -> dict[str, str]:
        return self.inner.capabilities()

    def old_versions(self, prefix: str = "") -> Iterator[OldVersion]:
        self._count("list_versions")
        return self.inner.old_versions(prefix)

    def delete_version(self, key: str, version_id: str) -> None:
        self._count("delete")
        self.inner.delete_version(key, version_id)

    def stats(self) -> dict[str, Any]:
        """Request counts and bytes moved, in the JSON shape of every job's statistics."""
        with self._lock:
            doc: dict[str, Any] = {
                "put": self.calls["put"],
                "get": self.calls["get"],
                "list": self.calls["list"],
                "stat": self.calls["stat"],
                "delete": self.calls["delete"],
                "bytes_uploaded": self.bytes_uploaded,
                "bytes_downloaded": self.bytes_downloaded,
            }
        http = getattr(self.inner, "http_requests", None)
        if http is not None:
            doc["http_requests"] = dict(sorted(http.items()))
        return doc
