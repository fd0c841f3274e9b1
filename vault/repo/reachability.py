"""What the snapshots still need: the packs that hold every blob reachable from them.

Shared by the jobs that must not touch needed data (object-lock maintenance, and prune to come).
Trees are read once each, however many snapshots share them.
"""

from __future__ import annotations

from vault.format.snapshot import Snapshot
from vault.format.tree import DIR, FILE
from vault.repo.repository import Repository


def referenced_packs(repo: Repository) -> set[str]:
    """Ids of the packs holding any tree or chunk reachable from any snapshot.

    Raises VaultError subclasses when a snapshot or tree cannot be read: a caller deciding what
    may be released must not guess."""
    repo.load_index()
    packs: set[str] = set()
    seen: set[str] = set()
    pending = [snapshot.tree for snapshot in repo.snapshots()]
    while pending:
        tree_id = pending.pop()
        if tree_id in seen:
            continue
        seen.add(tree_id)
        location = repo.index.lookup(bytes.fromhex(tree_id))
        if location is not None:
            packs.add(location.pack.id)
        for node in repo.load_tree(tree_id).nodes:
            if node.type == DIR and node.subtree:
                pending.append(node.subtree)
            elif node.type == FILE:
                for chunk in node.chunks:
                    chunk_location = repo.index.lookup(bytes.fromhex(chunk))
                    if chunk_location is not None:
                        packs.add(chunk_location.pack.id)
    return packs


def referenced_blobs(repo: Repository, snapshots: list[Snapshot] | None = None) -> set[bytes]:
    """Ids of every tree and chunk reachable from the snapshots (default: all of them; raises
    when any snapshot or tree cannot be read: prune must never guess what is still needed)."""
    repo.load_index()
    blobs: set[bytes] = set()
    pending = [snapshot.tree for snapshot in (repo.snapshots() if snapshots is None else snapshots)]
    while pending:
        tree_id = pending.pop()
        raw_id = bytes.fromhex(tree_id)
        if raw_id in blobs:
            continue
        blobs.add(raw_id)
        for node in repo.load_tree(tree_id).nodes:
            if node.type == DIR and node.subtree:
                pending.append(node.subtree)
            elif node.type == FILE:
                blobs.update(bytes.fromhex(c) for c in node.chunks)
    return blobs
