"""Snapshots: what one backup run saved, and the root tree that holds it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class SnapshotStats:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    files_new: int = 0
    files_changed: int = 0
    files_unchanged: int = 0
    bytes_read: int = 0
    bytes_added: int = 0
    bytes_stored: int = 0
    chunks_added: int = 0
    errors: int = 0
    unstable_files: int = 0
    started: str = ""
    finished: str = ""


@dataclass(frozen=True)
class Snapshot:
    id: str
    time: datetime
    host: str
    username: str
    paths: tuple[str, ...]
    tree: str
    tags: tuple[str, ...] = ()
    parent: str | None = None
    stats: SnapshotStats = field(default_factory=SnapshotStats)
    # Paths (as shown to the user) that could not be read or changed while being read.
    errors: tuple[str, ...] = ()
    program_version: str = ""
    catalog: str | None = None
    # The keyring generation the backup ran under: a keyring older than this was rolled back.
    keyring_generation: int = 0
    # Each database dump: source, kind, database, path in the tree, started, finished, bytes,
    # sha256, result (and error). With `walk`, the file walk's started/finished: their skew.
    databases: tuple[dict[str, Any], ...] = ()
    walk: dict[str, str] | None = None

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {
            "version": 1,
            "time": self.time.isoformat(),
            "host": self.host,
            "username": self.username,
            "paths": list(self.paths),
            "tree": self.tree,
            "tags": list(self.tags),
            "parent": self.parent,
            "stats": asdict(self.stats),
            "errors": list(self.errors),
            "program_version": self.program_version,
            "catalog": self.catalog,
            "keyring_generation": self.keyring_generation,
        }
        # Written only when present: a snapshot without them reads as before, in any version.
        if self.databases:
            doc["databases"] = list(self.databases)
        if self.walk:
            doc["walk"] = dict(self.walk)
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, snapshot_id: str, data: bytes) -> Snapshot:
        doc = json.loads(data)
        if doc.get("version") != 1:
            raise ValueError(f"unsupported snapshot version {doc.get('version')!r}")
        return cls(
            id=snapshot_id,
            time=datetime.fromisoformat(doc["time"]),
            host=doc["host"],
            username=doc["username"],
            paths=tuple(doc["paths"]),
            tree=doc["tree"],
            tags=tuple(doc["tags"]),
            parent=doc.get("parent"),
            stats=SnapshotStats(**doc.get("stats", {})),
            errors=tuple(doc.get("errors", ())),
            program_version=doc.get("program_version", ""),
            catalog=doc.get("catalog"),
            keyring_generation=int(doc.get("keyring_generation", 0)),
            databases=tuple(d for d in doc.get("databases", ()) if isinstance(d, dict)),
            walk=doc.get("walk") if isinstance(doc.get("walk"), dict) else None,
        )
