"""Tree packs, fetched whole and kept for the length of a job.

Walking a snapshot reads one tree per directory. Read one range at a time, that is one request
per directory: 200 GETs to restore a 12,000-file archive from S3, where restic needs none
(docs/benchmarks.md). Tree blobs are written to packs of their own (the writer keeps one pack
per blob type), so the first tree read from a pack fetches the whole pack and later ones cost
nothing. Bounded: the least recently used packs go once the cache passes its limit.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from vault.format import layout
from vault.storage import Storage

LIMIT_BYTES = 64 * 1024 * 1024


class TreePacks:
    def __init__(self, storage: Storage, limit: int = LIMIT_BYTES) -> None:
        self._storage = storage
        self._limit = limit
        self._packs: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def sealed_blob(self, pack_id: str, offset: int, length: int) -> bytes:
        """The sealed bytes of one blob of a tree pack (fetching the pack on first use)."""
        with self._lock:
            data = self._packs.get(pack_id)
            if data is not None:
                self._packs.move_to_end(pack_id)
        if data is None:
            data = self._storage.get(layout.pack(pack_id))
            with self._lock:
                if pack_id not in self._packs:
                    self._packs[pack_id] = data
                    self._size += len(data)
                while self._size > self._limit and len(self._packs) > 1:
                    _, dropped = self._packs.popitem(last=False)
                    self._size -= len(dropped)
        return data[offset : offset + length]

    def clear(self) -> None:
        with self._lock:
            self._packs.clear()
            self._size = 0
