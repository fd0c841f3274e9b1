"""The restore job: rebuild files from a snapshot into a target directory.

A restore is planned first (vault.jobs.restore.tiers): which entries, and, with a priority file,
which tier each belongs to. Directories are made first; then each tier in turn has its content
written (vault.jobs.restore.fetch), its links made, its files verified against their recorded
SHA-256 when asked (always, in a prioritised restore: a tier is reported done only once it is
verified) and its metadata applied, so the practice can open tier 1 while tier 2 is fetched.
Directory metadata (modes, owners, mtimes) comes last, deepest first. Everything is written
through `Target` (directory descriptors, nothing below the target followed:
vault.jobs.restore.target); trees whose names could escape a directory never decode. Existing
files are not overwritten unless asked.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from vault.errors import UsageError
from vault.format.paths import IncludeMatcher, display, normalize
from vault.format.snapshot import Snapshot
from vault.format.tree import DIR, SYMLINK
from vault.jobs.restore.entries import Entry, walk
from vault.jobs.restore.fetch import FETCH_THREADS, write_contents
from vault.jobs.restore.target import FileId, Target, UnsafeTarget
from vault.jobs.restore.tiers import TierPlan, plan_tiers, single_tier
from vault.policy.restore_priority import RestorePriority
from vault.progress import NoProgress, Progress
from vault.repo.repository import Repository

__all__ = ["Entry", "RestoreOptions", "RestoreResult", "TierResult", "restore", "walk"]


@dataclass(frozen=True)
class RestoreOptions:
    target: Path
    includes: tuple[str, ...] = ()
    overwrite: bool = False
    verify: bool = False
    # Complete an interrupted restore: existing files of the right size are checked chunk by
    # chunk against the snapshot (keyed chunk ids) and only what is missing or wrong is fetched.
    resume: bool = False
    # Restore in tiers (restore.toml), each verified before the next starts.
    priority: RestorePriority | None = None

    @property
    def verifies(self) -> bool:
        return self.verify or self.priority is not None


@dataclass
class TierResult:
    number: int
    name: str
    files: int = 0
    symlinks: int = 0
    bytes: int = 0
    verified: int = 0
    problems: int = 0
    bytes_downloaded: int = 0
    bytes_kept: int = 0
    seconds: float = 0.0
    note: str = ""

    @property
    def outcome(self) -> str:
        return "FAIL" if self.problems else "PASS"


@dataclass
class RestoreResult:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    bytes_downloaded: int = 0
    requests: int = 0
    verified: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)
    # With resume: bytes found already written correctly (verified chunk by chunk, not trusted
    # by name), and files that were complete.
    bytes_kept: int = 0
    files_kept: int = 0
    tiers: list[TierResult] = field(default_factory=list)


class RestoreMonitor(Protocol):
    """Who hears of tiers as they go (the command line's tier lines and JSON progress)."""

    def planned(self, tiers: list[TierPlan]) -> None: ...
    def tier_started(self, tier: TierPlan) -> None: ...
    def kept(self, amount: int) -> None: ...  # bytes a resume found in place (not fetched)
    def verifying(self, tier: TierPlan) -> None: ...
    def tier_finished(self, result: TierResult) -> None: ...


class NoMonitor:
    def planned(self, tiers: list[TierPlan]) -> None:
        pass

    def tier_started(self, tier: TierPlan) -> None:
        pass

    def kept(self, amount: int) -> None:
        pass

    def verifying(self, tier: TierPlan) -> None:
        pass

    def tier_finished(self, result: TierResult) -> None:
        pass


@dataclass
class RestorePlan:
    entries: list[Entry]  # everything restored: directories, files, links
    tiers: list[TierPlan]
    problems: list[tuple[str, str]]  # names refused while walking


def plan_restore(repo: Repository, snapshot: Snapshot, options: RestoreOptions) -> RestorePlan:
    """What a restore would write, tier by tier; reads trees (and the catalog for a studies
    tier), writes nothing."""
    problems: list[tuple[str, str]] = []
    repo.load_index()
    includes = [normalize(i) for i in options.includes]
    matcher = IncludeMatcher(includes)
    found = walk(repo, snapshot, problems, descend=matcher.selected)
    entries = [i for i in found if matcher.selected(i.path)]
    # Ancestors of an include are created as directories but keep nothing else.
    entries = [i for i in entries if i.node.type == DIR or matcher.inside(i.path)]
    if includes and not any(matcher.inside(i.path) for i in entries):
        raise UsageError(
            f"nothing in snapshot {snapshot.id[:8]} matches {', '.join(options.includes)}"
        )
    if options.priority is None:
        tiers = single_tier(entries)
    else:
        wants_catalog = any(t.studies for t in options.priority.tiers)
        catalog = repo.load_catalog(snapshot) if wants_catalog else None
        tiers = plan_tiers(entries, options.priority, catalog, snapshot.time)
    return RestorePlan(entries, tiers, problems)


def restore(
    repo: Repository,
    snapshot: Snapshot,
    options: RestoreOptions,
    progress: Progress | None = None,
    monitor: RestoreMonitor | None = None,
) -> RestoreResult:
    progress = progress or NoProgress()
    monitor = monitor or NoMonitor()
    plan = plan_restore(repo, snapshot, options)
    result = RestoreResult(problems=list(plan.problems))
    monitor.planned(plan.tiers)
    with Target(options.target.absolute()) as target:
        _check_target(target, plan.entries, options.overwrite or options.resume)
        for entry in plan.entries:
            if entry.node.type == DIR:
                target.make_dir(entry.rel)
                result.dirs += 1
        dirs = {e.path: e for e in plan.entries if e.node.type == DIR}
        last_needed = _last_tier_below(plan.tiers, dirs)
        for tier in plan.tiers:
            monitor.tier_started(tier)
            done = _restore_tier(repo, target, tier, len(plan.tiers), result, progress, options,
                                 monitor)  # fmt: skip
            if len(plan.tiers) > 1:
                _settle_dirs(target, tier, dirs, last_needed)
            result.tiers.append(done)
            monitor.tier_finished(done)
        # Last, deepest first: creating entries changed the directories' times.
        for entry in sorted(dirs.values(), key=lambda e: -e.path.count(b"/")):
            target.apply_metadata(entry.rel, entry.node)
    return result


def _ancestors(path: bytes) -> Iterator[bytes]:
    while (cut := path.rfind(b"/")) > 0:
        path = path[:cut]
        yield path


def _last_tier_below(tiers: list[TierPlan], dirs: dict[bytes, Entry]) -> dict[bytes, int]:
    """For each directory, the last tier that restores something below it."""
    last: dict[bytes, int] = {}
    for tier in tiers:
        for entry in tier.entries:
            for parent in _ancestors(entry.path):
                if parent in dirs:
                    last[parent] = tier.number
    return last


def _settle_dirs(
    target: Target, tier: TierPlan, dirs: dict[bytes, Entry], last_needed: dict[bytes, int]
) -> None:
    """A finished tier is usable: the directories above its files get their modes, owners and
    times now, not when the whole archive is back. One a later tier still writes into keeps
    the owner's rwx bits meanwhile (a read-only folder would stop the restore); the final pass
    gives every directory its exact metadata."""
    touched = {parent for e in tier.entries for parent in _ancestors(e.path) if parent in dirs}
    for path in sorted(touched, key=lambda p: -p.count(b"/")):
        node = dirs[path].node
        if last_needed.get(path, 0) > tier.number:
            node = replace(node, mode=node.mode | stat.S_IRWXU)
        target.apply_metadata(dirs[path].rel, node)


def _restore_tier(
    repo: Repository,
    target: Target,
    tier: TierPlan,
    count: int,
    result: RestoreResult,
    progress: Progress,
    options: RestoreOptions,
    monitor: RestoreMonitor,
) -> TierResult:
    started = time.perf_counter()
    done = TierResult(tier.number, tier.name, note=tier.note)
    files = tier.files
    label = "restore" if options.priority is None else f"tier {tier.number}/{count}"
    progress.start(label, sum(f.node.size for f in files))

    def kept(amount: int) -> None:
        monitor.kept(amount)  # first: the advance that follows is then known not to be speed
        progress.advance(amount)

    fetched = write_contents(
        repo, target, files, progress, overwrite=options.overwrite or options.resume,
        resume=options.resume, on_kept=kept, metadata=not options.verifies,
    )  # fmt: skip
    progress.finish()
    result.problems += fetched.problems
    result.requests += fetched.requests
    result.bytes_downloaded += fetched.bytes_downloaded
    result.bytes_kept += fetched.bytes_kept
    result.files_kept += fetched.files_kept
    done.bytes_downloaded, done.bytes_kept = fetched.bytes_downloaded, fetched.bytes_kept
    links = [e for e in tier.entries if e.node.type == SYMLINK]
    for entry in links:
        target.symlink(entry.rel, entry.node.link_target, options.overwrite or options.resume)
    # By number, not by printed path: two names that print alike are two files.
    good = [(n, f) for n, f in enumerate(files) if n not in fetched.failed]
    mismatched: set[int] = set()
    if options.verifies and good:
        monitor.verifying(tier)
        progress.start(f"verify {label}" if options.priority else "verify", sum(
            f.node.size for _, f in good))  # fmt: skip
        # Reading and SHA-256 release the GIL: files are verified as many at a time as they
        # are fetched, so a tier's check takes the machine, not one core.
        with ThreadPoolExecutor(max_workers=FETCH_THREADS, thread_name_prefix="verify") as pool:
            reasons = pool.map(
                lambda item: _verify(target, item[1], fetched.file_ids[item[0]], progress), good
            )
            for (number, entry), reason in zip(good, reasons, strict=True):
                if reason:
                    result.problems.append((display(entry.path), reason))
                    mismatched.add(number)
                else:
                    done.verified += 1
        progress.finish()
    # A file that failed keeps the restore's own mode (owner only) and today's time: given its
    # recorded size, mode and mtime, a tool that compares those would take it for good.
    for number, entry in good:
        if number not in mismatched and number not in fetched.metadata_set:
            target.apply_metadata(entry.rel, entry.node, fetched.file_ids[number])
    for entry in links:
        target.apply_metadata(entry.rel, entry.node)
    done.files = len(good)
    done.bytes = sum(f.node.size for _, f in good)
    done.symlinks = len(links)
    done.problems = len(fetched.failed) + len(mismatched)  # files, not chunks
    done.seconds = time.perf_counter() - started
    result.files += done.files
    result.bytes += done.bytes
    result.symlinks += done.symlinks
    result.verified += done.verified
    return done


def _check_target(target: Target, items: list[Entry], overwrite: bool) -> None:
    """Refuse before writing anything: a directory of the snapshot that exists in the target
    as something else (a planted symlink, a file), and without overwrite any existing name."""
    if target.fresh:
        return
    clashes = []
    for item in items:
        st = target.lstat(item.rel)
        if st is None:
            continue
        if item.node.type == DIR:
            if not stat.S_ISDIR(st.st_mode):
                what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
                raise UnsafeTarget(
                    f"restore target: {target.where(item.rel)} is {what}; refusing to "
                    "restore through it (move it away and run the restore again)"
                )
        elif not overwrite:
            clashes.append(item)
    if clashes:
        raise UsageError(
            f"refusing to overwrite {len(clashes)} existing file(s) in {target.root} "
            f"(first: {display(clashes[0].path)}); pass --overwrite to replace them"
        )


def _verify(target: Target, item: Entry, file_id: FileId, progress: Progress) -> str:
    """Re-read a restored file and compare its SHA-256; the reason it fails, or ''."""
    sha = hashlib.sha256()
    fd = target.reopen_file(item.rel, file_id, os.O_RDONLY)
    with open(fd, "rb", closefd=True) as handle:
        while block := handle.read(1 << 20):
            sha.update(block)
            progress.advance(len(block))
    if sha.hexdigest() == item.node.sha256:
        return ""
    return "restored content does not match the recorded SHA-256"
