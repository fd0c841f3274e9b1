"""Running a backup: lock, parent snapshot, the walk, then the catalog and the snapshot,
written in that order."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from vault import ids
from vault.dicom.catalog import Catalog
from vault.errors import DAMAGE, Interrupted
from vault.format.snapshot import Snapshot, SnapshotStats
from vault.format.tree import Tree
from vault.jobs.backup.dumps import DumpsDone, graft, run_dumps
from vault.jobs.backup.options import BackupOptions, BackupResult
from vault.jobs.backup.walk import Job
from vault.progress import NoProgress, Progress
from vault.repo import recover
from vault.repo.lock import Lock
from vault.repo.repository import Repository
from vault.repo.slot_usage import record_slot_use
from vault.sources.files import sources_of, total_size
from vault.whoami import os_user


def find_parent(repo: Repository, host: str, source_paths: list[str]) -> Snapshot | None:
    """The newest snapshot of the same host and the same source paths."""
    candidates = [s for s in repo.snapshots() if s.host == host and sorted(s.paths) == source_paths]
    return candidates[-1] if candidates else None


def _parent_root(repo: Repository, parent: Snapshot | None) -> Tree | None:
    """The parent's root tree; a damaged one only costs re-reading every file (a backup must
    still succeed in a repository that `check` finds damaged)."""
    try:
        return repo.load_tree(parent.tree) if parent else None
    except DAMAGE:
        return None


def _read_before_walk(
    repo: Repository, host: str, source_texts: list[str]
) -> tuple[Snapshot | None, Catalog | None]:
    """Record the slot's use, load the index, and find the parent and its catalog: together on
    a remote store (each is a round trip or two), in turn on a local one (where they are CPU
    and a second thread only contends for the interpreter)."""
    if repo.storage.local_root() is not None:
        record_slot_use(repo)
        repo.load_index()
        parent = find_parent(repo, host, source_texts)
        return parent, repo.load_catalog(parent) if parent else None
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="open") as pool:
        slot_use = pool.submit(record_slot_use, repo)
        indexed = pool.submit(repo.load_index)
        parent = find_parent(repo, host, source_texts)
        catalog = pool.submit(repo.load_catalog, parent) if parent else None
        indexed.result()
        slot_use.result()
        return parent, catalog.result() if catalog else None


def _empty_root(job: Job) -> str:
    """The root of a snapshot of database dumps only."""
    return job.tree_id((), None, "")


def backup(
    repo: Repository,
    options: BackupOptions,
    progress: Progress | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    stop: threading.Event | None = None,
) -> BackupResult:
    progress = progress or NoProgress()
    sources = sources_of(options.paths)
    source_texts = sorted(os.fsdecode(p) for p in sources)
    host = options.host or socket.gethostname()
    started = now()
    with Lock(repo.storage, repo.keyring, exclusive=False, operation="backup") as lock:
        repo.refresh_keyring()  # first: what follows may be sealed under a new epoch
        parent, parent_catalog = _read_before_walk(repo, host, source_texts)
        parent_root = _parent_root(repo, parent)  # needs the index
        job = Job(repo, options, progress, parent_catalog, stop)
        adopted = recover.left_by_killed_run(repo, lock.stale_seen)
        job.writer.adopt(adopted)
        progress.start("backup", None)
        if not isinstance(progress, NoProgress):
            # Sizing the sources in parallel gives the bar a total (and an ETA) early on.
            threading.Thread(
                target=lambda: progress.set_total(total_size(sources, job.excluded)),
                name="size-scan",
                daemon=True,
            ).start()
        dumps = DumpsDone()
        try:
            if not options.dumps_after_files:
                dumps = run_dumps(job, options.databases)
            walk_started = now()
            root = job.save_root(sources, parent_root) if sources else _empty_root(job)
            walk_finished = now()
            if options.dumps_after_files:
                dumps = run_dumps(job, options.databases)
            root = graft(job, root, dumps)
            job.writer.flush()
        except Interrupted:
            # Keep what was sent: chunks already started finish, then packs and index go out.
            job.pool.shutdown(wait=True, cancel_futures=True)
            job.writer.flush()
            raise
        finally:
            job.pool.shutdown(wait=True, cancel_futures=True)
            job.writer.close()
            progress.finish()
        c, w = job.counters, job.writer.stats
        stats = SnapshotStats(
            files=c.files,
            dirs=c.dirs,
            bytes=c.bytes,
            files_new=c.files_new,
            files_changed=c.files_changed,
            files_unchanged=c.files_unchanged,
            bytes_read=c.bytes_read,
            bytes_added=w.bytes_added,
            bytes_stored=w.bytes_stored,
            chunks_added=w.blobs_added,
            errors=len(job.errors),
            unstable_files=len(job.unstable),
            started=started.isoformat(),
            finished=now().isoformat(),
        )
        snapshot_id = ids.new_id()
        catalog = job.catalog.build()
        # The catalog before the snapshot that names it (write order).
        repo.save_catalog(snapshot_id, catalog, serialized=job.catalog.serialized(catalog))
        snapshot = Snapshot(
            id=snapshot_id,
            time=options.time or started,
            host=host,
            username=os_user(),
            paths=tuple(source_texts),
            tree=root,
            tags=options.tags,
            parent=parent.id if parent else None,
            stats=stats,
            errors=tuple(p.path for p in job.errors + job.unstable),
            program_version=repo.program_version(),
            catalog=snapshot_id,
            keyring_generation=repo.keyring.generation,
            databases=tuple(dumps.records),
            walk={"started": walk_started.isoformat(), "finished": walk_finished.isoformat()}
            if sources
            else None,
        )
        repo.save_snapshot(snapshot)
        # Verification of success: the snapshot reads back and authenticates.
        repo.load_snapshot(snapshot.id)
    return BackupResult(
        snapshot, job.errors, job.unstable, job.special, w.packs_written, catalog, len(adopted)
    )
