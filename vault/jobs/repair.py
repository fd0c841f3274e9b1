"""`vault repair index`: rebuild the index from the packs' own sealed trailers.

Every pack ends with an authenticated table of its blobs (docs/format.md §4), so the index
objects are a cache that can always be rebuilt: read each pack's header and trailer (two small
ranged GETs, a third only for a trailer longer than the tail fetched), write one index object
naming every readable pack, and only then delete the old index objects. A damaged, deleted or
tampered index object therefore costs nothing a repair cannot bring back. Packs whose trailers
cannot be read are reported by name; `vault check` then says which snapshots need them.
The caller holds the exclusive lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from vault import ids
from vault.errors import DAMAGE
from vault.format import index, layout, sealing
from vault.format.index import PackInfo
from vault.format.pack import PackEntry
from vault.progress import NoProgress, Progress
from vault.repo import index_store
from vault.repo.recover import read_trailers
from vault.repo.repository import Repository


@dataclass
class RepairResult:
    packs: int = 0
    blobs: int = 0
    previously_unindexed: list[str] = field(default_factory=list)  # packs no index named
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (pack object, problem)
    index_objects_replaced: int = 0
    kept_locked: list[str] = field(default_factory=list)
    dry_run: bool = False


def _indexed_packs(repo: Repository) -> set[str]:
    """Pack ids the current index objects name (those that can still be read)."""
    named: set[str] = set()
    for key in repo.index_objects():
        try:
            payload = repo.open_object(sealing.Kind.INDEX, key)
            named.update(pack.id for pack, _ in index.decode(payload, name=key))
        except DAMAGE:
            continue
    return named


def repair_index(
    repo: Repository, *, dry_run: bool = False, progress: Progress | None = None
) -> RepairResult:
    progress = progress or NoProgress()
    result = RepairResult(dry_run=dry_run)
    stored = {layout.id_of(i.key): i.size for i in repo.storage.list(layout.DATA)}
    previously = _indexed_packs(repo)
    batch: list[tuple[PackInfo, list[PackEntry]]] = []
    progress.start("read pack trailers", len(stored))
    # An outage propagates from here, before anything is written: it must not drop packs.
    for pack_id, found in read_trailers(repo, stored):
        progress.advance(1)
        if isinstance(found, str):
            result.unreadable.append((layout.pack(pack_id), found))
            continue
        batch.append(found)
        result.blobs += len(found[1])
        if pack_id not in previously:
            result.previously_unindexed.append(pack_id)
    progress.finish()
    result.packs = len(batch)
    old_keys = sorted(i.key for i in repo.storage.list(layout.INDEX))
    locked = index_store.locked_index_objects(repo, datetime.now(UTC)) if old_keys else set()
    result.kept_locked = sorted(locked)
    result.index_objects_replaced = len([k for k in old_keys if k not in locked])
    if dry_run:
        return result
    # The new index is durable before any old one goes: a crash in between leaves both, and
    # blobs named twice are harmless (the first location wins).
    index_id = ids.new_id()
    payload = repo.seal(sealing.Kind.INDEX, index_id, index.encode(batch))
    repo.put(layout.index(index_id), payload, if_absent=True)
    for key in old_keys:
        if key not in locked:
            repo.storage.delete(key)
    repo.forget_index()
    return result
