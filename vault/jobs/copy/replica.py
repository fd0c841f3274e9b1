"""Copying snapshots into a replica (`vault init --replica-of`): the offsite copy of 3-2-1.

A replica shares its source's chunk-id key, chunker seed and data-key epochs, so a chunk has
the same id in both and a pack opens in both: a pack whose every blob the replica lacks is
copied as it is stored, never decrypted; from a pack the replica needs only part of, the
needed blobs are read (authenticated, ids recomputed) and sealed into new packs. Objects go in
the safe order: packs, the index naming them, then for each snapshot its catalog and the
snapshot itself, read back. A copied pack's own trailer is read back from the replica and
must list what the source's index says.

Resumable: a pack that a killed copy left in the replica, unindexed, is recognised by its
name, its trailer read back and checked, and indexed without being sent again. Snapshots the
replica's own retention forgot (`vault forget` there records them) are not copied again.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from vault.errors import DAMAGE, IntegrityError, Interrupted, UsageError
from vault.format import crypto, layout
from vault.format.index import Location, PackInfo
from vault.format.pack import BlobType, PackEntry, open_blob
from vault.format.snapshot import Snapshot
from vault.progress import NoProgress, Progress
from vault.repo import jobstate, recover
from vault.repo.reachability import referenced_blobs
from vault.repo.repository import Repository
from vault.repo.writer import BlobWriter

TRANSFERS = 8  # packs in flight: a round trip each on S3, so many at once
# The replica's record of the snapshots its own retention removed: never copied again.
FORGOTTEN = jobstate.FORGOTTEN
STOPPED = "copy stopped on request; what arrived is indexed, and the next copy continues from it"


@dataclass
class CopyResult:
    # "replica": packs as stored (this module); "independent": blob by blob, re-encrypted
    # (vault.jobs.copy.independent).
    mode: str = "replica"
    copied: list[str] = field(default_factory=list)  # snapshot ids, oldest first
    already_there: int = 0
    forgotten: list[str] = field(default_factory=list)  # skipped: the replica forgot them
    packs_copied: int = 0
    bytes_copied: int = 0
    packs_resumed: int = 0  # left by a killed copy, checked and indexed, not sent again
    bytes_resumed: int = 0
    blobs_repacked: int = 0
    bytes_repacked: int = 0
    blobs_verified: int = 0  # with verify_data: every copied blob read back and opened
    blobs_read: int = 0  # independent: chunks read from the source, to find their ids there
    bytes_read: int = 0
    keyring_updated: bool = False


def check_pair(source: Repository, dest: Repository, *, independent: bool) -> None:
    """Refuse copying a repository into itself, and into a repository that is not its
    replica unless the caller said so (`independent`): a mistyped destination that the same
    passphrase happens to open must not silently receive every snapshot."""
    if source.config.repository_id == dest.config.repository_id:
        raise UsageError("the source and the destination are the same repository")
    if not independent and not is_replica(source, dest):
        raise UsageError(
            f"{dest.storage.location()} is not a replica of {source.storage.location()} "
            "(made with `vault init --replica-of`): its chunk ids and keys differ; to copy "
            "into it blob by blob, re-encrypted under its own keys, give --independent"
        )


def is_replica(source: Repository, dest: Repository) -> bool:
    """Whether dest was made with `vault init --replica-of` source (chunk ids and chunking
    agree, so packs copy as stored); otherwise it is independent."""
    return dest.keyring.shares_keys_with(source.keyring)


@dataclass(frozen=True)
class CopyPlan:
    snapshots: list[Snapshot]  # to copy, oldest first
    present: int  # of those asked for, how many the replica has
    forgotten: list[str]  # asked for, but forgotten by the replica's retention
    newest: datetime | None  # the newest snapshot asked for: the replica holds up to it after


def to_copy(source: Repository, replica: Repository, wanted: list[Snapshot] | None) -> CopyPlan:
    present = set(replica.snapshot_ids())
    forgotten = set((jobstate.load(replica, FORGOTTEN) or {}).get("snapshots", []))
    candidates = sorted(wanted if wanted is not None else source.snapshots(), key=lambda s: s.time)
    copy = [s for s in candidates if s.id not in present and s.id not in forgotten]
    return CopyPlan(
        copy,
        sum(1 for s in candidates if s.id in present),
        [s.id for s in candidates if s.id in forgotten and s.id not in present],
        candidates[-1].time if candidates else None,
    )


def _holds(entries: list[PackEntry], expected: list[Location]) -> bool:
    """Whether a pack's own table lists every blob the index places in it. It may list more:
    a blob stored twice (two backups at once, a re-upload after a kill) is indexed once."""
    listed = {(e.id, e.offset, e.length) for e in entries}
    return all((loc.entry.id, loc.entry.offset, loc.entry.length) in listed for loc in expected)


def copy_snapshots(
    source: Repository,
    replica: Repository,
    snapshots: list[Snapshot],
    *,
    verify_data: bool = False,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    transfers: int = TRANSFERS,
) -> CopyResult:
    """Copy `snapshots` (and what they need) from source into replica; both repositories are
    open, the replica under a shared lock and with its keyring following the source's."""
    progress = progress or NoProgress()
    stop = stop or threading.Event()
    result = CopyResult()
    if not snapshots:
        return result
    source.load_index()
    replica.load_index()
    needed = {b for b in referenced_blobs(source, snapshots) if b not in replica.index}
    in_pack = source.index.blob_counts()
    wanted: dict[str, list[Location]] = defaultdict(list)
    for blob_id in needed:
        location = source.index.lookup(blob_id)
        if location is None:
            raise IntegrityError(
                f"blob {blob_id.hex()[:16]} that a snapshot needs is not in the source's index: "
                "run `vault check` on the source"
            )
        wanted[location.pack.id].append(location)
    # A pack is copied whole when the replica needs every blob in it; `wanted` then lists
    # every one of them (what the trailer read back and --verify-data check).
    whole = [p for p, locs in wanted.items() if len(locs) == in_pack[p]]
    partial = [p for p in wanted if p not in set(whole)]
    left_behind = {
        layout.id_of(info.key): info.size
        for info in replica.storage.list(layout.DATA)
        if layout.id_of(info.key) in set(whole)
    }
    progress.start("copy", sum(loc.entry.length for p in wanted for loc in wanted[p]))
    writer = BlobWriter(replica)
    repacked: list[bytes] = []
    counted = threading.Lock()
    keys = {e.id: replica.keyring.epoch_key(e.id) for e in replica.keyring.live_epochs()}

    def read_back(pack_id: str, size: int) -> tuple[PackInfo, list[PackEntry]] | None:
        """The pack's own authenticated table, read from the replica, when it lists what the
        source's index says; None otherwise."""
        try:
            info, entries = recover.pack_contents(replica, pack_id, size, keys)
        except DAMAGE:
            return None
        return (info, entries) if _holds(entries, wanted[pack_id]) else None

    def copy_pack(pack_id: str) -> tuple[PackInfo, list[PackEntry]]:
        if stop.is_set():
            raise Interrupted(STOPPED)
        name = layout.pack(pack_id)
        locations = wanted[pack_id]
        size = left_behind.get(pack_id)
        found = read_back(pack_id, size) if size is not None else None
        resumed = found is not None
        if found is None:  # not there, or a killed run left it torn: send it
            data = source.storage.get(name)
            if verify_data:
                _open_all(source, pack_id, data, locations)
            replica.put(name, data)
            size = len(data)
            found = read_back(pack_id, size)
            if found is None:
                raise IntegrityError(f"{name} in the replica does not read back as it was sent")
        assert size is not None
        info, entries = found
        if verify_data:
            _open_all(replica, pack_id, replica.storage.get(name), locations)
        with counted:
            if resumed:
                result.packs_resumed += 1
                result.bytes_resumed += size
            else:
                result.packs_copied += 1
                result.bytes_copied += size
            if verify_data:
                result.blobs_verified += len(locations)
        progress.advance(sum(loc.entry.length for loc in locations))
        return info, entries

    with (
        blobs_written(writer, progress),
        ThreadPoolExecutor(max_workers=transfers, thread_name_prefix="copy") as pool,
    ):
        for info, entries in pool.map(copy_pack, sorted(whole)):
            writer.adopt([(info, entries)])
        for pack_id in sorted(partial):
            if stop.is_set():
                raise Interrupted(STOPPED)
            for location in sorted(wanted[pack_id], key=lambda loc: loc.entry.offset):
                plain = source.read_located(location)
                entry = location.entry
                if not crypto.constant_time_equal(source.blob_id(plain, entry.type), entry.id):
                    raise IntegrityError(
                        f"{layout.pack(pack_id)}: blob at {entry.offset} does not match its id"
                    )
                writer.add(entry.type, bytes(plain))
                repacked.append(entry.id)
                result.blobs_repacked += 1
                result.bytes_repacked += entry.raw_length
                progress.advance(entry.length)
    if verify_data:
        result.blobs_verified += read_back_blobs(replica, repacked)
    for snapshot in snapshots:
        if stop.is_set():
            raise Interrupted(STOPPED)
        if snapshot.catalog:
            name = layout.catalog(snapshot.catalog)
            replica.put(name, source.storage.get(name))
        name = layout.snapshot(snapshot.id)
        if name in replica.torn_objects:
            replica.storage.delete(name)  # an empty object a killed copy left: not a snapshot
        replica.put(name, source.storage.get(name), if_absent=True)
        replica.load_snapshot(snapshot.id)  # it reads back and authenticates
        result.copied.append(snapshot.id)
    return result


@contextmanager
def blobs_written(writer: BlobWriter, progress: Progress) -> Iterator[None]:
    """Blobs go into `writer` inside: after, the packs are flushed and the index names them
    (the snapshots come only then), and after a stop on request too, so the next copy does
    not send again what arrived."""
    try:
        yield
        writer.flush()
    except Interrupted:
        writer.flush()
        raise
    finally:
        writer.close()
        progress.finish()


def read_back_blobs(repo: Repository, blob_ids: list[bytes]) -> int:
    """Read each blob written into `repo` back from it, authenticated and its id recomputed;
    returns how many."""
    for blob_id in blob_ids:
        plain = repo.read_blob(blob_id)  # authenticated
        location = repo.index.lookup(blob_id)
        assert location is not None
        if repo.blob_id(plain, location.entry.type) != blob_id:
            raise IntegrityError(
                f"blob {blob_id.hex()[:16]} reads back wrong from {repo.storage.location()}"
            )
    return len(blob_ids)


def _open_all(repo: Repository, pack_id: str, data: bytes, locations: list[Location]) -> None:
    """Authenticate every blob of a whole pack and recompute its id."""
    name = layout.pack(pack_id)
    key = repo.pack_key(pack_id, locations[0].pack.epoch, locations[0].pack.salt)
    view = memoryview(data)
    for location in locations:
        e = location.entry
        plain = open_blob(key, e, view[e.offset : e.offset + e.length], pack_name=name)
        if not crypto.constant_time_equal(repo.blob_id(plain, BlobType(e.type)), e.id):
            raise IntegrityError(f"{name}: blob at {e.offset} does not match its id")
