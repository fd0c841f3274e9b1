"""The object-lock maintenance job: keep what the snapshots need under retention.

Every object is written with retention of `days` (vault.repo.repository). Objects the repository
still needs — config, keyring, key slots, indexes, snapshots and every pack a snapshot reaches —
get their retention moved forward to now + days when less than half of it is left, so
ransomware with the backup host's credentials can never delete current history. Packs that no
snapshot needs are left to expire, so prune can reclaim them once retention lapses.

Audit events and drill records are evidence HIPAA asks to keep for six years (164.316(b)(2)):
they are never pruned, and their retention is moved to at least six years ahead (or the
policy's days, if longer), so neither ransomware nor an insider can shorten the trail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from vault.errors import UsageError
from vault.format import layout
from vault.progress import NoProgress, Progress
from vault.repo import index_store
from vault.repo.reachability import referenced_packs
from vault.repo.repository import Repository
from vault.storage.base import Retention

EVIDENCE_RETENTION = timedelta(days=6 * 366)  # six years, leap days included


@dataclass
class ExtendResult:
    checked: int = 0
    extended: int = 0
    unneeded_packs_left: int = 0
    retain_until: str = ""
    extended_keys: list[str] = field(default_factory=list)


def needed_objects(repo: Repository) -> list[str]:
    fixed = [layout.CONFIG, layout.KEYRING, layout.VERSION]
    listed = [
        info.key
        for prefix in (layout.KEYS, layout.SLOT_INFO, layout.SNAPSHOTS, layout.CATALOGS)
        for info in repo.storage.list(prefix)
    ]
    packs = referenced_packs(repo)
    # Only index objects that name a needed pack: the others may expire, so prune can go on.
    indexes = sorted({key for key, pack, _ in index_store.load_raw(repo) if pack.id in packs})
    return fixed + listed + indexes + [layout.pack(p) for p in sorted(packs)]


def evidence_objects(repo: Repository) -> list[str]:
    """The audit events and drill records: kept for six years whatever else expires."""
    return [
        info.key for prefix in (layout.AUDIT, layout.DRILLS) for info in repo.storage.list(prefix)
    ]


def extend_retention(
    repo: Repository, *, now: datetime, dry_run: bool = False, progress: Progress | None = None
) -> ExtendResult:
    policy = repo.config.object_lock
    if policy is None:
        raise UsageError(
            f"the repository at {repo.storage.location()} was created without Object Lock "
            "(vault init --object-lock-days N)"
        )
    progress = progress or NoProgress()
    target = policy.retention(now)
    evidence = Retention(target.mode, max(target.until, now + EVIDENCE_RETENTION))
    needed = needed_objects(repo)
    evidence_keys = evidence_objects(repo)
    all_packs = sum(1 for _ in repo.storage.list(layout.DATA))
    result = ExtendResult(retain_until=target.until.isoformat())
    result.unneeded_packs_left = all_packs - sum(1 for k in needed if k.startswith(layout.DATA))
    progress.start("object lock", len(needed) + len(evidence_keys), unit="obj")
    for key, wanted in [(k, target) for k in needed] + [(k, evidence) for k in evidence_keys]:
        info = repo.storage.stat(key)
        result.checked += 1
        # Renewed when less than half the wanted retention is left.
        if info.retain_until is None or info.retain_until < now + (wanted.until - now) / 2:
            if not dry_run:
                repo.storage.extend_retention(key, wanted)
            result.extended += 1
            result.extended_keys.append(key)
        progress.advance(1)
    progress.finish()
    return result
