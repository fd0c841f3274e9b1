"""Restoring a database dump into a database server: the dump's verified chunks streamed
straight into the server's own loader (the mariadb client, or pg_restore), into a database
created for it, without the dump touching the disk on the way."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from vault.errors import UsageError
from vault.format.snapshot import Snapshot
from vault.format.tree import DIR, FILE, Node
from vault.policy.databases import DatabaseSource
from vault.progress import NoProgress, Progress
from vault.repo.content import file_blocks
from vault.repo.repository import Repository
from vault.sources import db_loads


@dataclass(frozen=True)
class DatabaseRestored:
    record: dict[str, Any]  # the dump's record in the snapshot
    database: str  # loaded into
    bytes: int
    seconds: float


def find_dump(snapshot: Snapshot, which: str) -> dict[str, Any]:
    """The record of the dump `which` names: a database, SOURCE/DATABASE, or a source whose
    only dump it is."""
    done = [r for r in snapshot.databases if r.get("result") == "PASS"]
    matches = [
        r for r in done if which in (r["database"], f"{r['source']}/{r['database']}", r["path"])
    ] or [r for r in done if r["source"] == which]
    if len(matches) == 1:
        return matches[0]
    names = ", ".join(f"{r['source']}/{r['database']}" for r in done) or "none"
    if not matches:
        raise UsageError(
            f"snapshot {snapshot.id[:8]} holds no dump of database {which!r} (its dumps: {names})"
        )
    raise UsageError(f"{which!r} names several dumps in snapshot {snapshot.id[:8]} ({names}): "
                     "give SOURCE/DATABASE")  # fmt: skip


def node_at(repo: Repository, snapshot: Snapshot, path: str) -> Node:
    tree_id = snapshot.tree
    parts = [os.fsencode(p) for p in path.strip("/").split("/")]
    for number, part in enumerate(parts):
        node = repo.load_tree(tree_id).get(part)
        if node is None:
            break
        if number == len(parts) - 1 and node.type == FILE:
            return node
        if node.type != DIR:
            break
        tree_id = node.subtree
    raise UsageError(f"snapshot {snapshot.id[:8]} does not hold the dump file {path}")


def restore_database(
    repo: Repository,
    snapshot: Snapshot,
    which: str,
    into: DatabaseSource,
    progress: Progress | None = None,
    *,
    timeout: float | None = None,
) -> DatabaseRestored:
    progress = progress or NoProgress()
    if into.kind == "command" or len(into.databases) != 1:
        raise UsageError("--into names one new database: mariadb://USER@HOST:PORT/NEWDB?...")
    record = find_dump(snapshot, which)
    if record["kind"] == "command":
        raise UsageError(
            f"{record['source']} is a command's output, which vault cannot load into a server: "
            f"restore it as a file (--target DIR --include {record['path']})"
        )
    repo.load_index()
    node = node_at(repo, snapshot, record["path"])
    started = time.monotonic()
    progress.start(f"load {record['source']}/{record['database']}", node.size)

    def blocks() -> Iterator[bytes]:
        for block in file_blocks(repo, node, record["path"]):
            progress.advance(len(block))
            yield bytes(block)

    try:
        loaded = db_loads.load(into, into.databases[0], blocks(), record["kind"], timeout)
    finally:
        progress.finish()
    return DatabaseRestored(record, into.databases[0], loaded, time.monotonic() - started)
