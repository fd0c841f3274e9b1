"""How much each data-key epoch seals: packs (from the index) and other sealed objects (from
their headers). Read by `key list`, `status` and re-encryption."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from vault.format import layout, sealing
from vault.repo.repository import Repository

# Prefixes of objects sealed with the generic envelope under a data-key epoch.
SEALED_PREFIXES = (
    layout.SNAPSHOTS,
    layout.INDEX,
    layout.DRILLS,
    layout.AUDIT,
    layout.LOCKS,
    layout.SLOT_INFO,
    layout.CATALOGS,
    layout.STATE,
)
_SEALED_HEADER = struct.Struct(">4sBI")


@dataclass
class EpochUsage:
    packs: int = 0
    pack_bytes: int = 0
    objects: int = 0  # other sealed objects (snapshots, indexes, …)


def sealed_epoch_of(repo: Repository, key: str) -> tuple[int, int] | None:
    """(kind, epoch) from a sealed object's header, read with one small ranged GET."""
    head = repo.storage.get(key, offset=0, length=_SEALED_HEADER.size)
    if len(head) < _SEALED_HEADER.size:
        return None
    magic, kind, epoch = _SEALED_HEADER.unpack(head)
    return (kind, epoch) if magic == sealing.MAGIC else None


def sealed_objects(repo: Repository) -> Iterator[tuple[str, int, int]]:
    for prefix in SEALED_PREFIXES:
        for info in repo.storage.list(prefix):
            found = sealed_epoch_of(repo, info.key)
            if found is not None:
                yield info.key, found[0], found[1]


def epoch_usage(repo: Repository) -> dict[int, EpochUsage]:
    """How many objects each epoch seals (packs from the index, others from their headers)."""
    usage: dict[int, EpochUsage] = {e.id: EpochUsage() for e in repo.keyring.epochs}
    sizes = {layout.id_of(i.key): i.size for i in repo.storage.list(layout.DATA)}
    for pack in repo.load_index().packs():
        entry = usage.setdefault(pack.epoch, EpochUsage())
        entry.packs += 1
        entry.pack_bytes += sizes.get(pack.id, 0)
    for _, _, epoch in sealed_objects(repo):
        usage.setdefault(epoch, EpochUsage()).objects += 1
    return usage
