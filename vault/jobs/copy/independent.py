"""Copying snapshots into an independent repository: its own keys, chunk-id key and chunker
(restic's `copy`), for moving to a new repository.

Nothing can go across as stored. Every chunk is read from the source (authenticated, its keyed
id recomputed), given the destination's keyed id and sealed there unless the destination
already holds it; every tree is rewritten with the new ids, bottom up. Files keep the source's
chunk boundaries, so nothing is chunked again and every file's SHA-256 stays what the backup
recorded. A snapshot keeps its id (ids are random, never derived from content), so a later
copy knows what is there. Catalogs are sealed again under the destination's keys. Write order
as everywhere: packs, then the index (flush), then per snapshot its catalog and the snapshot.

Unlike a replica, nothing is known across runs: a later copy reads again the chunks of each new
snapshot to find their ids here (it stores only what the destination lacks).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from vault.errors import IntegrityError, Interrupted
from vault.format import crypto, layout
from vault.format.pack import BlobType
from vault.format.snapshot import Snapshot
from vault.format.tree import DIR, FILE, Tree
from vault.jobs.copy.replica import CopyResult, blobs_written, read_back_blobs
from vault.progress import NoProgress, Progress
from vault.repo.repository import Repository
from vault.repo.writer import BlobWriter

READERS = 8  # chunk reads in flight: a round trip each on S3
STOPPED = "copy stopped on request; what arrived is indexed, and no snapshot was written"


def copy_independent(
    source: Repository,
    dest: Repository,
    snapshots: list[Snapshot],
    *,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    verify_data: bool = False,
    readers: int = READERS,
) -> CopyResult:
    """Copy `snapshots` from source into dest, re-encrypted blob by blob; dest is open under
    a shared lock. In the result, `blobs_read`/`bytes_read` count the chunks read from the
    source, `blobs_repacked`/`bytes_repacked` the chunks and trees sealed anew in dest."""
    progress = progress or NoProgress()
    stop = stop or threading.Event()
    result = CopyResult(mode="independent")
    if not snapshots:
        return result
    source.load_index()
    dest.load_index()
    trees: dict[str, Tree] = {}
    chunks: dict[str, int] = {}  # source chunk id -> its plain length, in first-seen order
    pending = [s.tree for s in snapshots]
    while pending:  # every tree once, however many snapshots and directories share it
        tree_id = pending.pop()
        if tree_id in trees:
            continue
        trees[tree_id] = tree = source.load_tree(tree_id)  # authenticated, id checked
        for node in tree.nodes:
            if node.type == DIR and node.subtree:
                pending.append(node.subtree)
            elif node.type == FILE:
                for chunk in node.chunks:
                    if chunk not in chunks:
                        chunks[chunk] = _plain_length(source, chunk)
    writer = BlobWriter(dest)
    new_ids: dict[str, str] = {}
    stored: list[bytes] = []  # chunks new in dest, for verify_data
    counted = threading.Lock()
    progress.start("copy", sum(chunks.values()))

    def copy_chunk(chunk: str) -> None:
        if stop.is_set():
            raise Interrupted(STOPPED)
        blob_id = bytes.fromhex(chunk)
        plain = source.read_blob(blob_id)  # authenticated
        if not crypto.constant_time_equal(source.blob_id(plain, BlobType.DATA), blob_id):
            raise IntegrityError(f"chunk {chunk[:16]} in the source does not match its id")
        theirs = dest.blob_id(plain, BlobType.DATA)
        new = theirs not in writer.index
        writer.add(BlobType.DATA, plain, theirs)
        with counted:
            new_ids[chunk] = theirs.hex()
            result.blobs_read += 1
            result.bytes_read += len(plain)
            if new:
                stored.append(theirs)
                result.blobs_repacked += 1
                result.bytes_repacked += len(plain)
        progress.advance(len(plain))

    rewritten: dict[str, str] = {}

    def rewrite(root: str) -> str:
        """The destination's id of the source's tree `root`: subtrees first, without
        recursion (a directory tree of any depth)."""
        stack = [root]
        while stack:
            tree_id = stack[-1]
            if tree_id in rewritten:
                stack.pop()
                continue
            below = [
                n.subtree
                for n in trees[tree_id].nodes
                if n.type == DIR and n.subtree and n.subtree not in rewritten
            ]
            if below:
                stack.extend(below)
                continue
            nodes = []
            for node in trees[tree_id].nodes:
                if node.type == DIR and node.subtree:
                    node = replace(node, subtree=rewritten[node.subtree])
                elif node.type == FILE and node.chunks:
                    node = replace(node, chunks=tuple(new_ids[c] for c in node.chunks))
                nodes.append(node)
            tree = Tree(tuple(nodes)).to_bytes()
            theirs = dest.blob_id(tree, BlobType.TREE)
            if theirs not in writer.index:
                result.blobs_repacked += 1
                result.bytes_repacked += len(tree)
            rewritten[tree_id] = writer.add(BlobType.TREE, tree, theirs).hex()
            stack.pop()
        return rewritten[root]

    with blobs_written(writer, progress):  # packs, then the index, and only then snapshots
        with ThreadPoolExecutor(max_workers=readers, thread_name_prefix="copy") as pool:
            for _ in pool.map(copy_chunk, chunks):
                pass
        roots = {s.id: rewrite(s.tree) for s in snapshots}
    if verify_data:
        result.blobs_verified += read_back_blobs(dest, stored)
    for snapshot in snapshots:
        if stop.is_set():
            raise Interrupted(STOPPED)
        catalog = source.load_catalog(snapshot)
        if catalog is not None:  # again: a killed copy may have left it without its snapshot
            dest.save_catalog(snapshot.id, catalog, again=True)
        name = layout.snapshot(snapshot.id)
        if name in dest.torn_objects:
            dest.storage.delete(name)  # an empty object a killed copy left: not a snapshot
        copied = replace(
            snapshot,
            tree=roots[snapshot.id],
            catalog=snapshot.id if catalog is not None else None,
            keyring_generation=dest.keyring.generation,
        )
        dest.save_snapshot(copied)
        dest.load_snapshot(snapshot.id)  # it reads back and authenticates
        result.copied.append(snapshot.id)
    return result


def _plain_length(source: Repository, chunk: str) -> int:
    location = source.index.lookup(bytes.fromhex(chunk))
    if location is None:
        raise IntegrityError(
            f"chunk {chunk[:16]} that a snapshot needs is not in the source's index: run "
            "`vault check` on the source"
        )
    return location.entry.raw_length
