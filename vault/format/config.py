"""The repository's config object: its id, chunker, pack size, compression and Object Lock
policy (docs/format.md, section 6.4). Pure: parsing and serializing only."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from vault.errors import IntegrityError
from vault.format import layout
from vault.format.chunker import ChunkerParams
from vault.storage import Retention

DEFAULT_PACK_SIZE = 16 * 1024 * 1024
DEFAULT_ZSTD_LEVEL = 3


LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")


@dataclass(frozen=True)
class ObjectLockPolicy:
    """S3 Object Lock retention set on every object vault writes (locks excepted)."""

    mode: str
    days: int

    def retention(self, now: datetime) -> Retention:
        return Retention(self.mode, now + timedelta(days=self.days))


@dataclass(frozen=True)
class Config:
    repository_id: str
    created: str
    chunker: ChunkerParams
    pack_size: int
    zstd_level: int
    object_lock: ObjectLockPolicy | None = None

    def to_bytes(self) -> bytes:
        lock = self.object_lock
        doc = {
            "version": 1,
            "repository_id": self.repository_id,
            "created": self.created,
            "chunker": self.chunker.to_json(),
            "pack_size": self.pack_size,
            "compression": {"algorithm": "zstd", "level": self.zstd_level},
            "object_lock": {"mode": lock.mode, "days": lock.days} if lock else None,
        }
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Config:
        try:
            doc = json.loads(data)
            if doc.get("version") != 1:
                raise IntegrityError("config has an unsupported version", key=layout.CONFIG)
            if doc["compression"]["algorithm"] != "zstd":
                raise IntegrityError("config names an unknown compression", key=layout.CONFIG)
            lock = doc.get("object_lock")
            return cls(
                doc["repository_id"],
                doc["created"],
                ChunkerParams.from_json(doc["chunker"]),
                int(doc["pack_size"]),
                int(doc["compression"]["level"]),
                ObjectLockPolicy(str(lock["mode"]), int(lock["days"])) if lock else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise IntegrityError("config is malformed", key=layout.CONFIG) from None
