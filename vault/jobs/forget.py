"""The forget job: remove the snapshots a retention policy does not keep.

Only snapshot records (and their study catalogs) are removed; the data they referenced stays
until prune reclaims what no snapshot needs. A snapshot whose object is still under S3 Object
Lock retention is kept and reported, never hidden behind a delete marker early.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from vault.errors import ObjectNotFound
from vault.format import layout
from vault.policy.retention import Decision, RetentionPolicy, SnapshotRef, apply
from vault.repo import jobstate
from vault.repo.repository import Repository


@dataclass
class ForgetResult:
    decisions: list[Decision] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    locked: dict[str, str] = field(default_factory=dict)  # snapshot id -> retained until


Announce = Callable[[list[str]], None]


def forget(
    repo: Repository,
    policy: RetentionPolicy,
    now: datetime,
    *,
    dry_run: bool,
    announce: Announce = lambda ids: None,
) -> ForgetResult:
    """Apply `policy`; see `remove_snapshots` for `announce`."""
    refs = [SnapshotRef(s.id, s.time, s.host, s.paths, s.tags) for s in repo.snapshots()]
    result = ForgetResult(decisions=apply(refs, policy, now))
    if dry_run:
        return result
    doomed = []
    for decision in result.decisions:
        if decision.keep:
            continue
        snapshot_id = decision.snapshot.id
        try:
            until = repo.storage.stat(layout.snapshot(snapshot_id)).retain_until
        except ObjectNotFound:
            continue
        if until is not None and until > now:
            result.locked[snapshot_id] = until.isoformat()
            continue
        doomed.append(snapshot_id)
    # Retention's own choice (not a repair's removal of a damaged snapshot): a replica keeps
    # it, and `vault copy` does not send these back.
    jobstate.remember_forgotten(repo, doomed)
    result.removed = remove_snapshots(repo, doomed, announce)
    return result


def remove_snapshots(repo: Repository, snapshot_ids: list[str], announce: Announce) -> list[str]:
    """Delete snapshots and their catalogs. `announce` hears the ids before the first deletion:
    the audit event is written first, because a record of a forget that was then interrupted is
    harmless, while a snapshot gone without one looks deleted behind vault's back."""
    announce(snapshot_ids)
    for snapshot_id in snapshot_ids:
        repo.storage.delete(layout.snapshot(snapshot_id))
        repo.storage.delete(layout.catalog(snapshot_id))
    return list(snapshot_ids)
