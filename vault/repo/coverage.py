"""Proof that the index names every blob the snapshots need, before anything is deleted.

Index objects can be lost (deleted, emptied by a torn write, replaced). The packs they named
are then "unindexed" although snapshots still need them, and a job that deletes packs or
destroys keys on the index's word alone would turn a lost index into lost data. So every job
that deletes packs (prune, forget --prune, re-encryption) and repair snapshots, before it
decides what is lost, first calls `prove_indexed`:

1. every pack the index objects do not name has its sealed trailer read (two ranged GETs);
   readable ones join the in-memory index, so the walk below finds trees they hold;
2. every blob reachable from a snapshot is looked up; one in no index and no readable pack
   stops the job with one clear error, before anything is deleted;
3. unindexed packs holding needed blobs are indexed again (one new index object, durable
   before the caller deletes anything); the others were read and hold nothing needed, so the
   caller may delete them. Packs whose trailer cannot be read are never deleted: they are
   reported, and `repair index` / `check` say more.

The caller holds the exclusive lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vault import ids
from vault.errors import DAMAGE, VaultError
from vault.format import index, layout, sealing
from vault.format.index import PackInfo
from vault.format.pack import HEADER_SIZE, PackEntry
from vault.repo.reachability import referenced_blobs
from vault.repo.recover import read_trailers
from vault.repo.repository import Repository

Pack = tuple[PackInfo, list[PackEntry]]


class IndexIncomplete(VaultError):
    """A blob a snapshot needs is in no index and no readable pack: nothing may be deleted."""


@dataclass
class Coverage:
    needed: set[bytes] = field(default_factory=set)  # every blob reachable from a snapshot
    rescued: list[Pack] = field(default_factory=list)  # unindexed, holding needed blobs
    rescue_index: str = ""  # the index object written for them ("" on a dry run)
    unneeded: list[Pack] = field(default_factory=list)  # unindexed, read, nothing needed
    empty: list[str] = field(default_factory=list)  # unindexed pack ids too short to hold a blob
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (pack object, why): kept


def incomplete(what: str) -> IndexIncomplete:
    return IndexIncomplete(
        f"stopped before deleting anything: {what}; run `vault repair index`, then `vault check`"
    )


def prove_indexed(
    repo: Repository, indexed: set[str], sizes: dict[str, int], *, write: bool
) -> Coverage:
    """`indexed`: pack ids the index objects name; `sizes`: every stored pack (id -> size).
    With `write`, rescued packs are indexed by a new index object before this returns."""
    repo.load_index()
    coverage = Coverage()
    unindexed = {pack_id: size for pack_id, size in sizes.items() if pack_id not in indexed}
    found: list[Pack] = []
    for pack_id, contents in read_trailers(repo, unindexed):
        if isinstance(contents, str):
            if unindexed[pack_id] < HEADER_SIZE or sealing.is_torn(unindexed[pack_id]):
                coverage.empty.append(pack_id)  # an upload killed at its start: holds nothing
            else:
                coverage.unreadable.append((layout.pack(pack_id), contents))
            continue
        found.append(contents)
        repo.index.add_pack(*contents)
    try:
        coverage.needed = referenced_blobs(repo)
    except DAMAGE as exc:
        raise incomplete(f"a snapshot cannot be walked ({exc})") from None
    missing = [blob for blob in coverage.needed if blob not in repo.index]
    if missing:
        raise incomplete(
            f"{len(missing)} blob(s) that snapshots need are in no index and no readable pack "
            f"(first: {min(missing).hex()[:16]})"
        )
    for pack, entries in found:
        holds_needed = any(e.id in coverage.needed for e in entries)
        (coverage.rescued if holds_needed else coverage.unneeded).append((pack, entries))
    if write and coverage.rescued:
        coverage.rescue_index = ids.new_id()
        key = layout.index(coverage.rescue_index)
        repo.put(
            key,
            repo.seal(sealing.Kind.INDEX, coverage.rescue_index, index.encode(coverage.rescued)),
            if_absent=True,
        )
    return coverage
