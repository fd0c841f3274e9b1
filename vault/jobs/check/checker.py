"""The check job: is every snapshot restorable, and (with read-data) is every stored byte sound?

Structural check: every index object opens; every pack the index names exists; every snapshot
opens; every tree it reaches is indexed, authenticates and matches its id; every chunk a file
lists is indexed in an existing pack; and every other kind of object (catalogs, audit log,
drill records, key slots, state) passes vault/jobs/check/records.py. Read-data check: each selected
pack is read whole, its sealed trailer must match the index, and every blob authenticates and
hashes to its id.

A partial read (`read_data_percent` < 100) takes the next packs in pack-id order after
`start_after` and wraps around, so successive partial checks walk every pack in turn instead of
sampling at random (which leaves some packs unread for months). The caller keeps the position.
Problems are findings, each naming the object and the snapshots it affects; check never stops
at the first one.
"""

from __future__ import annotations

import bisect
import math
import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from vault.errors import DAMAGE, IntegrityError, ObjectNotFound
from vault.format import crypto, index, layout, sealing
from vault.format.pack import BlobType, open_blob, read_trailer
from vault.format.snapshot import Snapshot
from vault.format.tree import DIR, FILE, Tree
from vault.jobs.check.records import check_records
from vault.parallel import in_order
from vault.progress import NoProgress, Progress
from vault.repo.damage import Salvage, salvage
from vault.repo.repository import Repository

# Packs read and verified at once, one per core from two to four (AES-GCM, zstd and SHA-256
# release the interpreter lock). Each holds a whole pack (up to 16 MiB): on two cores, three
# or four at once measured no faster than two and peaked 30-60 MiB higher.
READ_THREADS = max(2, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class Finding:
    object: str
    problem: str
    snapshots: tuple[str, ...] = ()

    def describe(self) -> str:
        affected = (
            f" (affects snapshots {', '.join(s[:8] for s in self.snapshots)})"
            if self.snapshots
            else ""
        )
        return f"{self.object}: {self.problem}{affected}"


@dataclass
class CheckResult:
    findings: list[Finding] = field(default_factory=list)
    snapshots: int = 0
    trees: int = 0
    packs: int = 0
    packs_read: int = 0
    bytes_read: int = 0
    blobs_read: int = 0
    unreferenced_packs: int = 0
    # Objects too short to be sealed, left by a writer killed mid-upload on servers whose PUT is
    # not atomic: harmless (nothing can refer to them), reported, removed by prune.
    torn_objects: list[str] = field(default_factory=list)
    last_pack_read: str = ""  # where a partial read stopped: the next one starts after it
    # Blobs found unreadable (pack missing or short, or — read-data — failing authentication),
    # and per damaged snapshot what can no longer be restored (for `vault repair snapshots`).
    unusable_blobs: set[bytes] = field(default_factory=set)
    lost: dict[str, Salvage] = field(default_factory=dict)

    def usable(self, index: index.Index) -> Callable[[bytes], bool]:
        return lambda blob_id: blob_id not in self.unusable_blobs and blob_id in index

    wrapped: bool = False  # this partial read reached the last pack and started over

    @property
    def ok(self) -> bool:
        return not self.findings


class _Checker:
    def __init__(self, repo: Repository, result: CheckResult) -> None:
        self.repo = repo
        self.result = result
        self.pack_sizes: dict[str, int] = {}
        self.tree_packs: dict[str, tuple[frozenset[str], bool]] = {}
        self.pack_snapshots: dict[str, set[str]] = defaultdict(set)
        self.reported_trees: set[str] = set()
        self.snapshots: list[Snapshot] = []

    def add(self, obj: str, problem: str, snapshots: set[str] | None = None) -> None:
        self.result.findings.append(Finding(obj, problem, tuple(sorted(snapshots or ()))))

    def load_index(self) -> None:
        for info in self.repo.storage.list(layout.INDEX):
            key = info.key
            if sealing.is_torn(info.size):
                self.result.torn_objects.append(key)
                continue
            try:
                payload = self.repo.open_object(sealing.Kind.INDEX, key)
                for pack, entries in index.decode(payload, name=key):
                    self.repo.index.load_pack(pack, entries)
            except DAMAGE as exc:
                self.add(key, f"unreadable index object: {exc}")
        self.repo.index.freeze()
        self.pack_sizes = {layout.id_of(i.key): i.size for i in self.repo.storage.list(layout.DATA)}
        indexed = {p.id for p in self.repo.index.packs()}
        self.result.packs = len(indexed)
        self.result.unreferenced_packs = len(set(self.pack_sizes) - indexed)

    def packs_of_tree(self, root_id: str) -> tuple[frozenset[str], bool]:
        """(packs holding everything under a tree, whether anything under it is damaged);
        memoized, so shared subtrees are read once; findings are recorded on the way.
        Iterative, children before parents: a tree can be ~2,000 levels deep (PATH_MAX)."""
        stack: list[tuple[str, Tree | None]] = [(root_id, None)]
        while stack:
            tree_id, tree = stack[-1]
            if tree is not None:
                stack.pop()
                self.tree_packs[tree_id] = self._summarize(tree_id, tree)
                continue
            if tree_id in self.tree_packs:
                stack.pop()
                continue
            # Until it is summarized, a tree counts as damaged: a forged tree that contains
            # itself meets this guard instead of looping.
            self.tree_packs[tree_id] = (frozenset(), True)
            tree = self._load_tree(tree_id)
            if tree is None:
                stack.pop()
                continue
            stack[-1] = (tree_id, tree)
            stack.extend(
                (node.subtree, None)
                for node in tree.nodes
                if node.type == DIR and node.subtree not in self.tree_packs
            )
        return self.tree_packs[root_id]

    def _load_tree(self, tree_id: str) -> Tree | None:
        try:
            tree = self.repo.load_tree(tree_id)
        except DAMAGE as exc:
            location = self.repo.index.lookup(bytes.fromhex(tree_id))
            pack = f" in {layout.pack(location.pack.id)}" if location else ""
            self.add(f"tree {tree_id[:16]}{pack}", str(exc))
            return None
        self.result.trees += 1
        return tree

    def _summarize(self, tree_id: str, tree: Tree) -> tuple[frozenset[str], bool]:
        """A tree's packs and damage, from its own nodes and its (already summarized)
        subtrees."""
        location = self.repo.index.lookup(bytes.fromhex(tree_id))
        packs: set[str] = {location.pack.id} if location else set()
        damaged = False
        for node in tree.nodes:
            if node.type == DIR:
                sub, sub_damaged = self.tree_packs[node.subtree]
                packs |= sub
                damaged |= sub_damaged
            elif node.type == FILE:
                total = 0
                for chunk in node.chunks:
                    loc = self.repo.index.lookup(bytes.fromhex(chunk))
                    if loc is None or loc.entry.type != BlobType.DATA:
                        self.add(
                            f"chunk {chunk[:16]}", f"is not in the index (file {node.display_name})"
                        )
                        damaged = True
                        total = -1
                        continue
                    packs.add(loc.pack.id)
                    total = total + loc.entry.raw_length if total >= 0 else total
                if total >= 0 and total != node.size:
                    self.add(
                        f"tree {tree_id[:16]}",
                        f"file {node.display_name} records {node.size} bytes but its chunks "
                        f"hold {total}",
                    )
                    damaged = True
        return frozenset(packs), damaged

    def check_snapshots(self) -> None:
        snapshot_ids = self.repo.snapshot_ids()
        self.result.torn_objects.extend(
            sorted(k for k in self.repo.torn_objects if k.startswith(layout.SNAPSHOTS))
        )
        for snapshot_id in snapshot_ids:
            key = layout.snapshot(snapshot_id)
            try:
                snapshot = self.repo.load_snapshot(snapshot_id)
            except DAMAGE as exc:
                self.add(key, f"unreadable snapshot: {exc}")
                continue
            self.result.snapshots += 1
            self.snapshots.append(snapshot)
            packs, damaged = self.packs_of_tree(snapshot.tree)
            if damaged:
                self.add(
                    key,
                    "cannot be fully restored: it reaches the damaged objects above",
                    {snapshot_id},
                )
            for pack_id in packs:
                self.pack_snapshots[pack_id].add(snapshot_id)

    def name_lost_files(self) -> None:
        """For each snapshot a finding affects: the files it can no longer restore."""
        damaged = {s for finding in self.result.findings for s in finding.snapshots}
        usable = self.result.usable(self.repo.index)
        for snapshot in self.snapshots:
            if snapshot.id in damaged:
                found = salvage(self.repo, snapshot.tree, usable)
                if found.lost:  # (a damaged catalog, say, costs no file)
                    self.result.lost[snapshot.id] = found

    def check_packs_exist(self) -> None:
        for pack in self.repo.index.packs():
            if pack.id not in self.pack_sizes:
                self.add(
                    layout.pack(pack.id),
                    "pack is missing from storage",
                    self.pack_snapshots.get(pack.id),
                )
        # Without reading data: every indexed blob must lie inside its pack's stored size.
        too_short: set[str] = set()
        for location in self.repo.index:
            size = self.pack_sizes.get(location.pack.id)
            end = location.entry.offset + location.entry.length
            if size is None or end > size:
                self.result.unusable_blobs.add(location.entry.id)
            if size is not None and end > size:
                too_short.add(location.pack.id)
        for pack_id in sorted(too_short):
            self.add(
                layout.pack(pack_id),
                f"is shorter ({self.pack_sizes[pack_id]} bytes) than its index says (truncated)",
                self.pack_snapshots.get(pack_id),
            )

    def read_pack(self, pack_id: str, expected: dict[bytes, index.Location]) -> _PackRead:
        """Read and verify one pack. Runs on a worker thread: it changes nothing shared and
        returns what it found, for the caller to merge in pack order."""
        name = layout.pack(pack_id)
        found = _PackRead()
        try:
            data = self.repo.storage.get(name)
        except ObjectNotFound:
            return found  # already reported as missing (its blobs too)
        found.fetched, found.bytes_read = True, len(data)
        info = next(iter(expected.values())).pack
        try:
            key = self.repo.pack_key(pack_id, info.epoch, info.salt)
            entries = read_trailer(data, None, pack_id=pack_id, pack_name=name, key=key)
        except IntegrityError as exc:
            found.problems.append(str(exc))
            found.unusable.update(expected)
            return found
        by_id = {e.id: e for e in entries}
        for blob_id, location in expected.items():
            if by_id.get(blob_id) != location.entry:
                found.problems.append(
                    f"index entry for blob {blob_id.hex()[:16]} does not match the pack trailer"
                )
                found.unusable.add(blob_id)
        view = memoryview(data)  # blobs are opened from views: no copy of each sealed blob
        for entry in entries:
            try:
                plain = open_blob(
                    key, entry, view[entry.offset : entry.offset + entry.length], pack_name=name
                )
            except IntegrityError as exc:
                found.problems.append(str(exc))
                found.unusable.add(entry.id)
                continue
            found.blobs_read += 1
            if not crypto.constant_time_equal(self.repo.blob_id(plain, entry.type), entry.id):
                found.problems.append(f"blob at offset {entry.offset} does not match its id")
                found.unusable.add(entry.id)
        return found

    def merge(self, pack_id: str, found: _PackRead) -> None:
        if found.fetched:
            self.result.packs_read += 1
            self.result.bytes_read += found.bytes_read
        self.result.blobs_read += found.blobs_read
        self.result.unusable_blobs.update(found.unusable)
        for problem in found.problems:
            self.add(layout.pack(pack_id), problem, self.pack_snapshots.get(pack_id))


@dataclass
class _PackRead:
    fetched: bool = False  # False: the pack was gone (already reported as missing)
    bytes_read: int = 0
    blobs_read: int = 0
    problems: list[str] = field(default_factory=list)
    unusable: set[bytes] = field(default_factory=set)


def check(
    repo: Repository,
    *,
    read_data_percent: float = 0.0,
    progress: Progress | None = None,
    start_after: str = "",
) -> CheckResult:
    """Check the repository; `read_data_percent` of the packs (0..100) are read and verified,
    the next ones after the pack id `start_after` when it is a partial read."""
    progress = progress or NoProgress()
    result = CheckResult()
    checker = _Checker(repo, result)
    checker.load_index()
    checker.check_snapshots()
    for obj, problem, affected in check_records(repo, checker.snapshots):
        checker.add(obj, problem, affected)
    checker.check_packs_exist()
    if read_data_percent > 0:
        by_pack: dict[str, dict[bytes, index.Location]] = defaultdict(dict)
        for location in repo.index:
            by_pack[location.pack.id][location.entry.id] = location
        pack_ids = sorted(by_pack)
        if read_data_percent < 100:
            pack_ids = _next_packs(pack_ids, read_data_percent, start_after, result)
        progress.start("read data", sum(checker.pack_sizes.get(p, 0) for p in pack_ids))
        # AES-GCM, zstd and SHA-256 release the interpreter lock: packs are read and verified
        # on every core (one at a time, check --read-data left the second core idle).
        for pack_id, found in in_order(
            pack_ids, lambda p: checker.read_pack(p, by_pack[p]), READ_THREADS
        ):
            checker.merge(pack_id, found)
            progress.advance(checker.pack_sizes.get(pack_id, 0))
        progress.finish()
        result.last_pack_read = pack_ids[-1] if pack_ids else ""
    checker.name_lost_files()
    return result


def _next_packs(ordered: list[str], percent: float, after: str, result: CheckResult) -> list[str]:
    """`percent` of `ordered` (at least one), continuing after `after` and wrapping around."""
    if not ordered:
        return []
    count = min(len(ordered), max(1, math.ceil(len(ordered) * percent / 100)))
    start = bisect.bisect_right(ordered, after) if after else 0
    chosen = (ordered[start:] + ordered[:start])[:count]
    result.wrapped = start + count >= len(ordered)
    return chosen
