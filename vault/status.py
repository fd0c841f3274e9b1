"""The status job: what a practice admin or compliance officer checks at a glance.

Last backup and its age, the current data-key epoch against the key policy (rotation due?),
key slots, and locks. Later issues add the RPO check, the last drill and the scheduler's state.
Read-only: nothing is written.
"""

from __future__ import annotations

import socket
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from vault import chain, layout, sealing
from vault.keys import DESTROYED
from vault.keyusage import epoch_usage
from vault.lock import LockInfo, list_locks
from vault.policy import DrillPolicy, KeyPolicy
from vault.repository import Repository
from vault.snapshot import Snapshot

OK = "ok"
DUE_SOON = "due soon"
OVERDUE = "overdue"


@dataclass
class KeyStatus:
    current_epoch: int
    epoch_created: str
    epoch_age_seconds: int
    epoch_objects: int
    rotation: str  # ok | due soon | overdue
    reasons: list[str] = field(default_factory=list)
    destroyed_epochs: list[int] = field(default_factory=list)
    slots: dict[str, int] = field(default_factory=dict)


@dataclass
class Status:
    location: str
    repository_id: str
    snapshots: int
    latest: Snapshot | None
    latest_age_seconds: int | None
    keys: KeyStatus
    locks: list[tuple[LockInfo, bool]]  # (lock, stale)
    last_drill: dict[str, Any] | None = None
    drill_age_seconds: int | None = None
    drill_overdue: bool = False

    @property
    def ok(self) -> bool:
        # A missing drill is flagged (drill_overdue), not failed: a new repository has none,
        # and the scheduler (or the admin) runs one; an overdue key rotation fails.
        return self.keys.rotation != OVERDUE


def key_status(repo: Repository, policy: KeyPolicy, now: datetime) -> KeyStatus:
    current = repo.keyring.epoch(repo.keyring.current_epoch)
    age = int((now - datetime.fromisoformat(current.created)).total_seconds())
    usage = epoch_usage(repo).get(current.id)
    objects = (usage.packs + usage.objects) if usage else 0
    reasons = []
    rotation = OK
    max_age = policy.max_epoch_age_days * 86400
    if age >= max_age:
        rotation = OVERDUE
        reasons.append(
            f"epoch {current.id} is {age // 86400} days old (policy: {policy.max_epoch_age_days})"
        )
    elif age >= max_age - policy.warn_days * 86400:
        rotation = DUE_SOON
        reasons.append(
            f"epoch {current.id} reaches {policy.max_epoch_age_days} days in "
            f"{(max_age - age) // 86400} days"
        )
    if objects >= policy.max_objects_per_epoch:
        rotation = OVERDUE
        reasons.append(
            f"epoch {current.id} seals {objects} objects (policy: {policy.max_objects_per_epoch})"
        )
    return KeyStatus(
        current_epoch=current.id,
        epoch_created=current.created,
        epoch_age_seconds=age,
        epoch_objects=objects,
        rotation=rotation,
        reasons=reasons,
        destroyed_epochs=[e.id for e in repo.keyring.epochs if e.state == DESTROYED],
        slots=dict(Counter(slot.kind for slot in repo.slots())),
    )


def last_drill(repo: Repository) -> dict[str, Any] | None:
    records = chain.read(repo, layout.DRILLS, sealing.Kind.DRILL, "drill record").records
    drills = [r for r in records if r.get("type") == "drill"]
    return drills[-1] if drills else None


def status(
    repo: Repository, policy: KeyPolicy, now: datetime, drill_policy: DrillPolicy | None = None
) -> Status:
    snapshots = repo.snapshots()
    latest = snapshots[-1] if snapshots else None
    host = socket.gethostname()
    locks = [(lk, lk.is_stale(now, host)) for lk in list_locks(repo.storage, repo.keyring)]
    drill = last_drill(repo)
    drill_age = (
        int((now - datetime.fromisoformat(drill["started"])).total_seconds()) if drill else None
    )
    frequency = (drill_policy or DrillPolicy()).frequency_days * 86400
    return Status(
        last_drill=drill,
        drill_age_seconds=drill_age,
        drill_overdue=drill_age is None or drill_age > frequency,
        location=repo.storage.location(),
        repository_id=repo.config.repository_id,
        snapshots=len(snapshots),
        latest=latest,
        latest_age_seconds=int((now - latest.time).total_seconds()) if latest else None,
        keys=key_status(repo, policy, now),
        locks=locks,
    )
