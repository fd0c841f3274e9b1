"""Database dumps in a backup: each dump tool's output streamed straight into the chunker (no
temporary file), then its file node grafted into the snapshot's root tree at the path the
source names (by default /databases/SOURCE/DATABASE.sql).

A dump that fails, is cut short or is empty is a problem of the backup (exit code 3, the
snapshot marked incomplete), like a file that could not be read; it never stops the file
sources from being saved.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from vault.format.tree import DIR, FILE, Node, Tree
from vault.jobs.backup.options import Problem
from vault.jobs.backup.walk import Job, Pending
from vault.policy.databases import DatabaseSource
from vault.sources.databases import DatabaseError, Dump


@dataclass
class DumpsDone:
    """What the dumps of one backup made: nodes by path inside the snapshot, and their record."""

    nodes: dict[str, Node] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def run_dumps(job: Job, sources: tuple[DatabaseSource, ...]) -> DumpsDone:
    done = DumpsDone()
    for source in sources:
        for database, path in source.dump_paths():
            job.stop_if_asked()
            started = _now()
            t0 = time.monotonic()
            record: dict[str, Any] = {
                "source": source.name,
                "kind": source.kind,
                "database": database,
                "path": path,
                "started": started,
            }
            try:
                node = _stream(job, source, database, path)
            except DatabaseError as exc:
                # The dump's own failure. A stop request, or the repository failing, is not
                # the database's: it ends the backup as it would during the file walk.
                job.errors.append(Problem(f"database {source.name}/{database}", str(exc)))
                record.update(finished=_now(), result="FAIL", error=str(exc))
                done.records.append(record)
                continue
            record.update(
                finished=_now(),
                seconds=round(time.monotonic() - t0, 3),
                bytes=node.size,
                sha256=node.sha256,
                result="PASS",
            )
            done.nodes[path] = node
            done.records.append(record)
    return done


def _stream(job: Job, source: DatabaseSource, database: str, path: str) -> Node:
    dump = Dump(source, database)
    sha = hashlib.sha256()
    futures: list[Future[bytes] | bytes] = []
    try:

        def read(n: int) -> bytes:
            block = dump.read(n)
            sha.update(block)
            job.counters.bytes_read += len(block)
            job.progress.advance(len(block))
            return block

        for chunk in job.chunker.chunks(read):
            job.stop_if_asked()
            job.in_flight.acquire()
            futures.append(job.pool.submit(job.store_chunk, chunk))
        dump.finish()
    finally:
        dump.close()
    now_ns = time.time_ns()
    node = Node(
        name=os.fsencode(os.path.basename(path)),
        type=FILE,
        mode=0o600,  # a dump holds every patient's record: readable by its owner only
        uid=os.geteuid(),
        gid=os.getegid(),
        mtime_ns=now_ns,
        size=dump.bytes,
        ctime_ns=now_ns,
        sha256=sha.hexdigest(),
    )
    resolved = Pending(node, futures).resolve()
    job.counters.files += 1
    job.counters.files_new += 1
    job.counters.bytes += dump.bytes
    return resolved


def graft(job: Job, root_id: str, done: DumpsDone) -> str:
    """The root tree `root_id` with each node placed at its path, folders made on the way
    (owner-only, like the dumps); a path that a backed-up file or folder already holds is a
    problem, and that dump is left out rather than hiding the file."""
    nodes = done.nodes
    if not nodes:
        return root_id
    job.writer.flush()  # the trees the walk just wrote become readable
    made: dict[str, Tree] = {}  # trees this graft wrote, not yet flushed
    for path, node in sorted(nodes.items()):
        parts = [os.fsencode(p) for p in path.strip("/").split("/")]
        try:
            root_id = _place(job, root_id, parts, node, made)
        except _Taken as exc:
            why = (
                f"the dump's path {path} is already taken by a backed-up {exc.args[0]}; "
                "give the database source another path"
            )
            job.errors.append(Problem(f"database dump {path}", why))
            # Not in the snapshot: its record must not send a restore to the file that is.
            for record in done.records:
                if record["path"] == path:
                    record.update(result="FAIL", error=why)
    return root_id


class _Taken(Exception):
    pass


def _place(job: Job, tree_id: str, parts: list[bytes], node: Node, made: dict[str, Tree]) -> str:
    tree = made.get(tree_id) or (job.repo.load_tree(tree_id) if tree_id else Tree(()))
    name = parts[0]
    existing = tree.get(name)
    if len(parts) == 1:
        if existing is not None:
            raise _Taken("folder" if existing.type == DIR else "file")
        child = node
    else:
        if existing is not None and existing.type != DIR:
            raise _Taken("file")
        subtree = _place(job, existing.subtree if existing else "", parts[1:], node, made)
        if existing is not None:
            child = replace(existing, subtree=subtree)
        else:
            child = Node(
                name=name,
                type=DIR,
                mode=stat.S_IMODE(0o700),
                uid=os.geteuid(),
                gid=os.getegid(),
                mtime_ns=time.time_ns(),
                subtree=subtree,
            )
            job.counters.dirs += 1
    nodes = tuple(sorted([n for n in tree.nodes if n.name != name] + [child], key=lambda n: n.name))
    tree_id = job.tree_id(nodes, None, "")
    made[tree_id] = Tree(nodes)
    return tree_id
