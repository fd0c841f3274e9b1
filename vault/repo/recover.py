"""Reading packs without an index, and taking back what a killed run uploaded.

Every pack ends with an authenticated table of its blobs (docs/format.md §4), so an index entry
can always be rebuilt from the pack itself with two small ranged GETs (header and tail; a third
only when the trailer is longer than the tail). `vault repair index` does this for every pack.

A backup killed between uploading packs and the next index checkpoint leaves packs no index
names: sound, sealed, but invisible to deduplication, so the next run would upload their
contents again (up to a checkpoint's worth, 1 GiB by default). A killed process also leaves its
lock behind, so when a backup finds a stale lock it lists the packs, reads the trailers of the
unindexed ones, and adopts them — only those sealed under the current key epoch, so nothing a
rotation is retiring comes back. Adopting a pack another live client is about to index is
harmless: a blob named twice keeps its first location.
"""

from __future__ import annotations

from collections.abc import Iterator

from vault.errors import DAMAGE
from vault.format import layout, sealing
from vault.format.index import PackInfo
from vault.format.pack import (
    HEADER_SIZE,
    PackEntry,
    TrailerBeyondTail,
    parse_header,
    read_trailer_parts,
)
from vault.repo.lock import LockInfo
from vault.repo.repository import Repository

TAIL_BYTES = 64 * 1024  # holds the trailer of a pack of up to ~1,300 blobs

Packs = list[tuple[PackInfo, list[PackEntry]]]


def _readable_epoch_keys(repo: Repository) -> dict[int, bytes]:
    keys = {}
    for epoch in repo.keyring.epochs:
        try:
            keys[epoch.id] = repo.keyring.epoch_key(epoch.id)
        except KeyError:
            continue  # destroyed: packs under it cannot be read
    return keys


def pack_contents(
    repo: Repository, pack_id: str, size: int, keys: dict[int, bytes]
) -> tuple[PackInfo, list[PackEntry]]:
    """The pack's own authenticated table of blobs, read with ranged GETs."""
    name = layout.pack(pack_id)
    header = repo.storage.get(name, offset=0, length=HEADER_SIZE)
    tail_length = min(size, TAIL_BYTES)
    tail = repo.storage.get(name, offset=size - tail_length, length=tail_length)
    try:
        entries = read_trailer_parts(header, tail, size, keys, pack_id=pack_id, pack_name=name)
    except TrailerBeyondTail as longer:
        tail = repo.storage.get(name, offset=size - longer.needed, length=longer.needed)
        entries = read_trailer_parts(header, tail, size, keys, pack_id=pack_id, pack_name=name)
    epoch, salt = parse_header(header, pack_name=name)
    return PackInfo(pack_id, epoch, salt), entries


def read_trailers(
    repo: Repository, sizes: dict[str, int]
) -> Iterator[tuple[str, tuple[PackInfo, list[PackEntry]] | str]]:
    """For each pack (id -> stored size), in id order: its contents from its own trailer, or
    why they cannot be read. An outage propagates: it says nothing about the pack."""
    keys = _readable_epoch_keys(repo)
    for pack_id, size in sorted(sizes.items()):
        if sealing.is_torn(size) or size < HEADER_SIZE:
            yield pack_id, "empty or truncated object"
            continue
        try:
            contents = pack_contents(repo, pack_id, size, keys)
        except DAMAGE as exc:
            yield pack_id, str(exc)
            continue
        yield pack_id, contents


def unindexed_current_packs(repo: Repository, indexed: set[str]) -> Packs:
    """Readable packs sealed under the current epoch that the index does not name. A pack
    that cannot be read is left alone: `check` reports it, `prune` deletes it."""
    unindexed = {
        layout.id_of(info.key): info.size
        for info in repo.storage.list(layout.DATA)
        if layout.id_of(info.key) not in indexed
    }
    current = repo.keyring.current_epoch
    return [
        found
        for _, found in read_trailers(repo, unindexed)
        if not isinstance(found, str) and found[0].epoch == current
    ]


def left_by_killed_run(repo: Repository, stale_locks: list[LockInfo]) -> Packs:
    """What a backup should adopt before it starts: nothing unless a stale lock (seen when
    the backup took its own) says a run was killed — listing every pack on each run would
    cost a large repository minutes."""
    if not stale_locks:
        return []
    return unindexed_current_packs(repo, {pack.id for pack in repo.load_index().packs()})
