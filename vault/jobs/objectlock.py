"""The object-lock maintenance job: keep what the snapshots need under retention.

Every object is written with retention of `days` (vault.repo.repository). Objects the repository
still needs — config, keyring, key slots, indexes, snapshots and every pack a snapshot reaches —
get their retention moved forward to now + days when less than half of it is left, so
ransomware with the backup host's credentials can never delete current history. Packs that no
snapshot needs are left to expire, so prune can reclaim them once retention lapses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from vault.errors import UsageError
from vault.format import layout
from vault.progress import NoProgress, Progress
from vault.repo import index_store
from vault.repo.reachability import referenced_packs
from vault.repo.repository import Repository


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
    renew_before = now + (target.until - now) / 2
    needed = needed_objects(repo)
    all_packs = sum(1 for _ in repo.storage.list(layout.DATA))
    result = ExtendResult(retain_until=target.until.isoformat())
    result.unneeded_packs_left = all_packs - sum(1 for k in needed if k.startswith(layout.DATA))
    progress.start("object lock", len(needed), unit="obj")
    for key in needed:
        info = repo.storage.stat(key)
        result.checked += 1
        if info.retain_until is None or info.retain_until < renew_before:
            if not dry_run:
                repo.storage.extend_retention(key, target)
            result.extended += 1
            result.extended_keys.append(key)
        progress.advance(1)
    progress.finish()
    return result
