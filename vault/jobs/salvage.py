"""`vault repair snapshots`: for each damaged snapshot, a new one holding everything still readable.

The caller has run `check` (with read-data when blobs may be damaged inside intact packs) and
passes its verdict on which blobs can be read. Each damaged snapshot's trees are rewritten
without the files that lost a chunk and the directories whose listing is unreadable
(vault/repo/damage.py); unchanged subtrees keep their ids, so the new snapshot costs only the trees
on the paths to the losses. The new snapshot keeps the original's time, host, paths and tags,
adds the tag "repaired", names the original as its parent, lists every lost path among its
errors (so `status` and `snapshots` show it), and gets the original's study catalog without
the lost files. Write order as in a backup: trees, then index, then catalog, then snapshot.
The originals stay unless the caller forgets them. The caller holds the exclusive lock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from vault import ids
from vault.dicom.catalog import Catalog
from vault.errors import DAMAGE
from vault.format.pack import BlobType
from vault.format.snapshot import Snapshot
from vault.format.tree import Tree
from vault.repo.damage import Salvage, salvage
from vault.repo.repository import Repository
from vault.repo.writer import BlobWriter

REPAIRED_TAG = "repaired"


@dataclass
class Repaired:
    original: Snapshot
    salvage: Salvage
    new_id: str = ""  # "" on a dry run, or when nothing at all could be saved
    earlier: bool = False  # new_id is a copy an earlier repair made: none was written now


def repair_snapshots(
    repo: Repository,
    snapshots: list[Snapshot],
    damaged: set[str],
    usable: Callable[[bytes], bool],
    *,
    dry_run: bool,
) -> list[Repaired]:
    """Copies of the `damaged` (ids) among `snapshots` (every snapshot in the repository)."""
    # A damaged snapshot repaired before keeps its copy: repairing it again would only add an
    # identical one (and a copy that is damaged now is itself among `damaged`).
    copies = {s.parent: s.id for s in snapshots if REPAIRED_TAG in s.tags and s.parent}
    writer = None if dry_run else BlobWriter(repo)
    write = None if writer is None else _tree_writer(writer)
    repaired = []
    try:
        for snapshot in (s for s in snapshots if s.id in damaged):
            earlier = copies.get(snapshot.id, "")
            found = salvage(repo, snapshot.tree, usable, None if earlier else write)
            if found.lost:
                repaired.append(Repaired(snapshot, found, earlier, bool(earlier)))
        if writer is not None:
            writer.flush()  # the new trees are indexed before any snapshot names them
    finally:
        if writer is not None:
            writer.close()
    if dry_run:
        return repaired
    for item in repaired:
        if not item.salvage.everything and not item.earlier:
            item.new_id = _save(repo, item.original, item.salvage)
    return repaired


def _tree_writer(writer: BlobWriter) -> Callable[[Tree], str]:
    return lambda tree: writer.add(BlobType.TREE, tree.to_bytes()).hex()


def _save(repo: Repository, original: Snapshot, found: Salvage) -> str:
    new_id = ids.new_id()
    catalog = _catalog_without(repo, original, found.lost)
    if catalog is not None:
        repo.save_catalog(new_id, catalog)
    stats = replace(
        original.stats,
        files=original.stats.files - found.lost_files,
        bytes=original.stats.bytes - found.lost_bytes,
        errors=original.stats.errors + len(found.lost),
    )
    tags = original.tags if REPAIRED_TAG in original.tags else (*original.tags, REPAIRED_TAG)
    repo.save_snapshot(
        replace(
            original,
            id=new_id,
            tree=found.tree,
            tags=tags,
            parent=original.id,
            stats=stats,
            errors=(*original.errors, *found.lost),
            program_version=repo.program_version(),
            catalog=new_id if catalog is not None else None,
        )
    )
    repo.load_snapshot(new_id)  # reads back and authenticates
    return new_id


def _catalog_without(repo: Repository, original: Snapshot, lost: list[str]) -> Catalog | None:
    try:
        catalog = repo.load_catalog(original)
    except DAMAGE:
        return None  # damaged too: the new snapshot has none (files still restore)
    if catalog is None:
        return None
    lost_files = {p for p in lost if not p.endswith("/")}
    lost_dirs = tuple(p for p in lost if p.endswith("/"))

    def gone(path: str) -> bool:
        return path in lost_files or path.startswith(lost_dirs)

    studies = {}
    for uid, study in catalog.studies.items():
        files = [f for f in study.files if not gone(f)]
        if files:
            studies[uid] = replace(study, files=files)
    return Catalog(
        studies=studies,
        file_headers={p: h for p, h in catalog.file_headers.items() if not gone(p)},
        unparseable=[p for p in catalog.unparseable if not gone(p)],
    )
