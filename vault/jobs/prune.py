"""The prune job: reclaim the space of data no snapshot needs, without ever losing what one does.

Under an exclusive lock:
1. prove that the index names every blob reachable from a snapshot (vault.repo.coverage): packs
   no index names have their trailers read, those holding needed blobs are indexed again, and
   prune stops before deleting anything if a needed blob is in no pack, or a snapshot or tree
   cannot be read. A lost index object never turns into lost data;
2. classify packs: fully unused → delete; mostly unused (more than REPACK_THRESHOLD of their
   bytes) → copy their used blobs into new packs, then delete; packs that no index names and
   whose trailer shows nothing needed (left by interrupted backups) → delete; unindexed packs
   whose trailer cannot be read are kept and reported; packs under Object Lock retention are
   left alone and reported;
3. write order: new packs and their index first, then one consolidated index naming every kept
   pack, then delete the old index objects, and only then the packs. A kill at any point leaves
   every needed blob in a durable, indexed pack; what it leaves behind is garbage the next prune
   removes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from vault.errors import DAMAGE, ObjectNotFound
from vault.format import layout
from vault.format.index import PackInfo
from vault.format.pack import PackEntry
from vault.progress import NoProgress, Progress
from vault.repo import index_store
from vault.repo.coverage import incomplete, prove_indexed
from vault.repo.repository import Repository
from vault.repo.writer import BlobWriter

REPACK_THRESHOLD = 0.3


@dataclass
class PruneResult:
    packs_before: int = 0
    packs_deleted: int = 0
    packs_repacked: int = 0
    unindexed_deleted: int = 0
    unindexed_reindexed: int = 0  # packs no index named that snapshots need: indexed again
    unreadable_kept: list[tuple[str, str]] = field(default_factory=list)  # unindexed, unread
    bytes_freed: int = 0
    bytes_rewritten: int = 0
    locked_packs: int = 0
    locked_bytes: int = 0
    dry_run: bool = False
    locked_keys: list[str] = field(default_factory=list)


def prune(
    repo: Repository,
    now: datetime,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> PruneResult:
    progress = progress or NoProgress()
    try:
        raw = index_store.load_raw(repo)
    except DAMAGE as exc:
        raise incomplete(f"an index object cannot be read ({exc})") from None
    sizes = {layout.id_of(i.key): i.size for i in repo.storage.list(layout.DATA)}
    coverage = prove_indexed(repo, {pack.id for _, pack, _ in raw}, sizes, write=not dry_run)
    needed = coverage.needed
    # Rescued packs are indexed now (durably, unless a dry run): from here on they are packs
    # like any other, kept for the blobs they hold.
    rescue_key = layout.index(coverage.rescue_index) if coverage.rescue_index else "(dry run)"
    raw += [(rescue_key, pack, entries) for pack, entries in coverage.rescued]
    locked_indexes = index_store.locked_index_objects(repo, now)
    # A pack named by an index object that cannot be deleted yet must stay with it.
    pinned = {pack.id for key, pack, _ in raw if key in locked_indexes}
    result = PruneResult(packs_before=len(sizes), dry_run=dry_run)
    result.unindexed_reindexed = len(coverage.rescued)
    result.unreadable_kept = coverage.unreadable

    packs: dict[str, tuple[PackInfo, list[PackEntry]]] = {}
    for _, pack, entries in raw:
        packs.setdefault(pack.id, (pack, []))[1].extend(entries)
    delete: set[str] = set()
    repack: set[str] = set()
    vanished: set[str] = set()
    unused_in: dict[str, int] = {}
    for pack_id, (_, entries) in packs.items():
        if pack_id not in sizes:
            # Lost from storage: while a snapshot needs it, the index keeps naming it and
            # check keeps reporting it; once none does (forgotten, or replaced by `repair
            # snapshots`), it leaves the index.
            if not any(e.id in needed for e in entries):
                vanished.add(pack_id)
            continue
        used = sum(e.length for e in entries if e.id in needed)
        unused = sum(e.length for e in entries if e.id not in needed)
        if used == 0:
            delete.add(pack_id)
        elif unused > REPACK_THRESHOLD * (used + unused):
            repack.add(pack_id)
            unused_in[pack_id] = unused
    # Only unindexed packs whose trailer was read and holds nothing needed, or too short to
    # hold anything; never one that could not be read.
    unindexed = {pack.id for pack, _ in coverage.unneeded} | set(coverage.empty)

    def locked(pack_id: str) -> bool:
        if pack_id in pinned:
            result.locked_packs += 1
            result.locked_bytes += sizes.get(pack_id, 0)
            result.locked_keys.append(layout.pack(pack_id))
            return True
        try:
            until = repo.storage.stat(layout.pack(pack_id)).retain_until
        except ObjectNotFound:
            return False
        if until is not None and until > now:
            result.locked_packs += 1
            result.locked_bytes += sizes.get(pack_id, 0)
            result.locked_keys.append(layout.pack(pack_id))
            return True
        return False

    delete = {p for p in delete if not locked(p)}
    repack = {p for p in repack if not locked(p)}
    unindexed = {p for p in unindexed if not locked(p)}
    result.packs_deleted = len(delete)
    result.packs_repacked = len(repack)
    result.unindexed_deleted = len(unindexed)
    result.bytes_freed = sum(sizes[p] for p in delete | unindexed)
    if dry_run:
        # Repacking frees about the unused blobs' bytes; the real run reports the exact figure.
        result.bytes_freed += sum(unused_in[p] for p in repack)
        return result

    # 1. Copy what repacked packs still hold into new packs (indexed when flushed).
    gone = delete | repack | vanished
    keep_index = index_store.index_of(raw, lambda pack: pack.id not in gone)
    writer = BlobWriter(repo, index=keep_index)
    try:
        progress.start("repack", sum(sizes[p] for p in repack))
        for pack_id in sorted(repack):
            read, _ = writer.copy_pack(packs[pack_id][0], lambda entry: entry.id in needed)
            progress.advance(read)
        writer.flush()
    finally:
        writer.close()
        progress.finish()
    result.bytes_rewritten = writer.stats.bytes_stored
    # 2. One index naming every kept pack (old and new), then the old index objects go.
    index_store.consolidate(repo, lambda pack: pack.id not in gone, locked=locked_indexes)
    # 3. Only now the packs.
    for pack_id in sorted(delete | repack | unindexed):
        repo.storage.delete(layout.pack(pack_id))
    for torn in sorted(repo.torn_objects):  # empty objects of interrupted writes
        repo.storage.delete(torn)
    # Exact: what the data/ prefix shrank by (new packs' headers and trailers included).
    result.bytes_freed = sum(sizes.values()) - sum(i.size for i in repo.storage.list(layout.DATA))
    return result
