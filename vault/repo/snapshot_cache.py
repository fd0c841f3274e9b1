"""Snapshots read once and kept, for a long-lived reader (the console) that lists them on
every page: each look lists the snapshot objects (one request) and reads only the new ones.
A snapshot object changes only when it is retagged (a legal hold), which changes its size;
so one whose size changed is read again."""

from __future__ import annotations

from dataclasses import dataclass, field

from vault.errors import VaultError
from vault.format import layout, sealing
from vault.format.snapshot import Snapshot
from vault.repo.repository import Repository


@dataclass
class SnapshotCache:
    _snapshots: dict[str, Snapshot] = field(default_factory=dict)
    _sizes: dict[str, int] = field(default_factory=dict)

    def snapshots(self, repo: Repository) -> list[Snapshot]:
        """Every readable snapshot, oldest first (as Repository.snapshots)."""
        listed = {
            layout.id_of(info.key): info.size
            for info in repo.storage.list(layout.SNAPSHOTS)
            if not sealing.is_torn(info.size)
        }
        for gone in set(self._snapshots) - set(listed):
            del self._snapshots[gone]
            del self._sizes[gone]
        for snapshot_id, size in listed.items():
            if snapshot_id in self._snapshots and self._sizes[snapshot_id] == size:
                continue
            try:
                self._snapshots[snapshot_id] = repo.load_snapshot(snapshot_id)
            except VaultError:
                continue  # forgotten meanwhile, or damaged: status and check say which
            self._sizes[snapshot_id] = size
        return sorted(self._snapshots.values(), key=lambda s: (s.time, s.id))
