"""The status job: what a practice admin or compliance officer checks at a glance.

Each concern (the last backup against the RPO, the last check and how recently every pack was
read, the last drill, key rotation, locks) becomes a Finding with a level; the worst level is
the overall OK / WARN / FAIL. Also reported: repository size, dedup and compression ratios and
the Object Lock settings. Read-only: nothing is written.
"""

from __future__ import annotations

import socket
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from vault.evidence.drill_log import merged
from vault.evidence.replica_status import replica_warnings, replicas
from vault.format import layout, sealing
from vault.format.config import ObjectLockPolicy
from vault.format.pack import BlobType
from vault.format.snapshot import Snapshot
from vault.policy.files import DrillPolicy, KeyPolicy
from vault.repo import chain, jobstate
from vault.repo.keyring import DESTROYED, RETIRING
from vault.repo.keys import weak_slot
from vault.repo.keyusage import epoch_usage
from vault.repo.lock import LockInfo, list_locks
from vault.repo.repository import Repository

LEVEL_OK, LEVEL_WARN, LEVEL_FAIL = "OK", "WARN", "FAIL"
_RANK = {LEVEL_OK: 0, LEVEL_WARN: 1, LEVEL_FAIL: 2}
CHECK_WARN_DAYS = 8  # a weekly check that has not run for more than a week
READ_CYCLE_DAYS = 30  # every pack read at least once in this many days

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
    weak_slots: list[str] = field(default_factory=list)  # ids of test-strength passphrase slots
    # Reported compromised and not yet re-encrypted away (an interrupted `key compromised`).
    compromised_epochs: list[int] = field(default_factory=list)
    retiring: bool = False  # a re-encryption was interrupted
    master_id: int = 1
    master_created: str = ""
    master_age_days: int = 0
    master_rotation: str = OK  # ok | due soon | overdue (a WARN: see docs/status.md)
    master_max_days: int = 365
    master_inferred: bool = False  # created before vault recorded master keys: age is a bound


@dataclass(frozen=True)
class Finding:
    topic: str  # backup | replica | check | drill | keys | locks | evidence
    level: str  # OK | WARN | FAIL
    message: str  # what is wrong and what to do; no secrets, no PHI


@dataclass
class Space:
    stored_bytes: int = 0  # packs as stored (compressed, encrypted)
    unique_bytes: int = 0  # distinct data chunks before compression
    logical_bytes: int = 0  # what all snapshots hold, counting every copy

    @property
    def dedup_ratio(self) -> float:
        return self.logical_bytes / self.unique_bytes if self.unique_bytes else 1.0

    @property
    def compression_ratio(self) -> float:
        return self.unique_bytes / self.stored_bytes if self.stored_bytes else 1.0


@dataclass(frozen=True)
class RestoreProjection:
    seconds: float
    bytes: int  # the latest snapshot's size
    throughput_bytes_per_second: float
    drill_id: str
    drill_started: str


def restore_projection(
    records: list[dict[str, Any]], latest: Snapshot | None
) -> RestoreProjection | None:
    """The drill model (vault.evidence.drill): archive bytes / measured throughput, using the
    newest drill that measured one. A failed drill's throughput still measures the path from
    storage to disk; the drill's own result is judged elsewhere."""
    if latest is None:
        return None
    for record in reversed(records):
        rate = float((record.get("volume") or {}).get("throughput_bytes_per_second") or 0)
        if rate > 0:
            return RestoreProjection(
                latest.stats.bytes / rate,
                latest.stats.bytes,
                rate,
                str(record.get("drill_id", "")),
                str(record.get("started", "")),
            )
    return None


@dataclass
class Status:
    location: str
    repository_id: str
    snapshots: int
    latest: Snapshot | None
    latest_age_seconds: int | None
    keys: KeyStatus
    locks: list[tuple[LockInfo, bool]]  # (lock, stale)
    rpo_hours: int = 24
    last_drill: dict[str, Any] | None = None
    # The newest drill of each scenario (sampled, full, …), annotations applied: an annual full
    # drill that failed is not hidden by the monthly sampled drills that passed since.
    latest_drills: dict[str, dict[str, Any]] = field(default_factory=dict)
    open_actions: list[dict[str, Any]] = field(default_factory=list)
    drill_age_seconds: int | None = None
    drill_overdue: bool = False
    last_check: dict[str, Any] | None = None
    space: Space = field(default_factory=Space)
    object_lock: ObjectLockPolicy | None = None
    # The audit log's and drill records' ends against what this machine saw (vault.repo.chain).
    chain_problems: list[str] = field(default_factory=list)
    break_glass: list[dict[str, Any]] = field(default_factory=list)  # unacknowledged opens
    # The full restore of the latest snapshot, projected as drills project it: its size over
    # the throughput the newest drill that restored anything measured (None: no such drill).
    restore_projection: RestoreProjection | None = None
    full_restore_rto_hours: int = 72
    # The newest snapshot with database dumps: the nightly files-and-databases snapshot, which
    # a PACS snapshot written after it would hide as "latest".
    latest_with_databases: Snapshot | None = None
    # Each replica this repository copies into (from its `copy` audit events): its id and
    # place, the last copy that passed and any failure since, and how far behind it is.
    replicas: list[dict[str, Any]] = field(default_factory=list)
    copy_rpo_hours: int = 48
    findings: list[Finding] = field(default_factory=list)

    @property
    def level(self) -> str:
        return max((f.level for f in self.findings), key=_RANK.__getitem__, default=LEVEL_OK)

    @property
    def ok(self) -> bool:
        return self.level != LEVEL_FAIL


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
    master = repo.keyring.current_master
    master_age = max(0, (now - datetime.fromisoformat(master.created)).days)
    master_rotation = OK
    if master_age >= policy.max_master_age_days:
        master_rotation = OVERDUE
    elif master_age >= policy.max_master_age_days - policy.warn_days:
        master_rotation = DUE_SOON
    return KeyStatus(
        compromised_epochs=[e.id for e in repo.keyring.exposed_epochs()],
        retiring=any(e.state == RETIRING for e in repo.keyring.epochs),
        master_id=master.id,
        master_created=master.created,
        master_age_days=master_age,
        master_rotation=master_rotation,
        master_max_days=policy.max_master_age_days,
        master_inferred=master.inferred,
        current_epoch=current.id,
        epoch_created=current.created,
        epoch_age_seconds=age,
        epoch_objects=objects,
        rotation=rotation,
        reasons=reasons,
        destroyed_epochs=[e.id for e in repo.keyring.epochs if e.state == DESTROYED],
        slots=dict(Counter(slot.kind for slot in repo.slots())),
        weak_slots=[slot.id for slot in repo.slots() if weak_slot(slot)],
    )


def drills(repo: Repository) -> list[dict[str, Any]]:
    """Every drill record, with its later annotations applied, oldest first."""
    return merged(chain.read(repo, layout.DRILLS, sealing.Kind.DRILL, "drill record"))


def last_drill(repo: Repository) -> dict[str, Any] | None:
    found = drills(repo)
    return max(found, key=lambda r: r["seq"]) if found else None


def space(repo: Repository, snapshots: list[Snapshot]) -> Space:
    result = Space(logical_bytes=sum(s.stats.bytes for s in snapshots))
    for location in repo.load_index():
        result.stored_bytes += location.entry.length
        if location.entry.type == BlobType.DATA:
            result.unique_bytes += location.entry.raw_length
    return result


def _age(now: datetime, iso: str) -> int | None:
    try:
        return int((now - datetime.fromisoformat(iso)).total_seconds())
    except (TypeError, ValueError):
        return None


def _judge(st: Status, now: datetime, frequency_days: int) -> list[Finding]:
    found = []
    rpo = st.rpo_hours * 3600
    if st.latest is None or st.latest_age_seconds is None:
        found.append(Finding("backup", LEVEL_FAIL, "no backup yet: run `vault backup`"))
    elif st.latest_age_seconds > rpo:
        found.append(
            Finding(
                "backup",
                LEVEL_FAIL,
                f"the last backup is {st.latest_age_seconds / 3600:.1f} h old, more than the "
                f"RPO of {st.rpo_hours} h: see the scheduler's log, then run `vault backup`",
            )
        )
    with_dumps = st.latest_with_databases
    failed_dumps = [
        f"{d['source']}/{d['database']}"
        for d in (with_dumps.databases if with_dumps else ())
        if d.get("result") != "PASS"
    ]
    if failed_dumps:
        found.append(
            Finding(
                "backup",
                LEVEL_FAIL,
                f"the last backup's database dump of {', '.join(failed_dumps)} failed: the "
                "snapshot holds the files without that database; see the backup's log",
            )
        )
    # A failed dump counts among the snapshot's errors; the files are what is left.
    unread = st.latest.stats.errors if st.latest else 0
    if with_dumps is not None and with_dumps is st.latest:
        unread -= len(failed_dumps)
    fresh = st.latest_age_seconds is not None and st.latest_age_seconds <= rpo
    if fresh and unread > 0:
        found.append(
            Finding(
                "backup",
                LEVEL_WARN,
                f"the last backup could not read {unread} file(s): see its log",
            )
        )
    found += [
        Finding("replica", LEVEL_WARN, message)
        for message in replica_warnings(st.replicas, st.copy_rpo_hours)
    ]
    check = st.last_check
    if check is None:
        found.append(Finding("check", LEVEL_WARN, "never checked: run `vault check`"))
    else:
        if check.get("outcome") != "PASS":
            found.append(
                Finding(
                    "check",
                    LEVEL_FAIL,
                    f"the last check found {check.get('findings', '?')} problem(s): run "
                    "`vault check --read-data` and see docs/operations.md",
                )
            )
        age = _age(now, str(check.get("time")))
        if age is None or age > CHECK_WARN_DAYS * 86400:
            found.append(Finding("check", LEVEL_WARN, "no check in the last week"))
        all_read = _age(now, str(check.get("all_packs_read", "")))
        if all_read is None or all_read > READ_CYCLE_DAYS * 86400:
            found.append(
                Finding(
                    "check",
                    LEVEL_WARN,
                    f"not every pack has been read back in the last {READ_CYCLE_DAYS} days "
                    "(weekly `vault check --read-data-subset 25` covers them)",
                )
            )
    drill = st.last_drill
    if drill is None:
        found.append(Finding("drill", LEVEL_WARN, "no restore drill yet: run `vault drill`"))
    else:
        for scenario, latest in sorted(st.latest_drills.items()):
            if latest.get("result") != "PASS":
                found.append(
                    Finding(
                        "drill",
                        LEVEL_FAIL,
                        f"the latest drill of its kind ({scenario}: "
                        f"{str(latest.get('drill_id', '?'))[:8]}, "
                        f"{str(latest.get('started', ''))[:10]}) FAILED; it stays failed until "
                        "a drill of that kind passes (`vault drill report` shows why)",
                    )
                )
        for action in st.open_actions:
            found.append(
                Finding(
                    "drill",
                    LEVEL_WARN,
                    f"drill {str(action['drill_id'])[:8]} has an open corrective action "
                    f"({action['corrective_actions']}): open until a reviewer approves it "
                    "(`vault drill annotate ID --reviewer NAME --approved`)",
                )
            )
        if st.drill_overdue:
            found.append(
                Finding("drill", LEVEL_WARN, f"no drill in the last {frequency_days} days")
            )
    projected = st.restore_projection
    if projected and projected.seconds > st.full_restore_rto_hours * 3600:
        found.append(
            Finding(
                "drill",
                LEVEL_WARN,
                f"a full restore of the latest snapshot is projected to take "
                f"{projected.seconds / 3600:.1f} h at the "
                f"{projected.throughput_bytes_per_second / 1e6:.1f} MB/s drill "
                f"{projected.drill_id[:8]} measured, past the full-restore RTO of "
                f"{st.full_restore_rto_hours} h (drill.toml): restore in priority order "
                "(docs/disaster-recovery.md) or speed up the path from storage",
            )
        )
    for opened in st.break_glass:
        found.append(
            Finding(
                "keys",
                LEVEL_WARN,
                f"{opened.get('how') or 'the repository was opened with the RECOVERY KEY'} "
                f"(break-glass) on "
                f"{str(opened.get('time', ''))[:16]} by {opened.get('who', '?')} (audit event "
                f"{opened.get('event')}): if that was expected, `vault audit --acknowledge "
                f"{opened.get('event')} --note TEXT`",
            )
        )
    for problem in st.chain_problems:
        found.append(
            Finding(
                "evidence",
                LEVEL_FAIL,
                f"{problem}: the evidence was tampered with; `vault audit --verify` and "
                "`vault drill history --verify` show the whole chain",
            )
        )
    for slot_id in st.keys.weak_slots:
        found.append(
            Finding(
                "keys",
                LEVEL_WARN,
                f"key slot {slot_id[:8]} derives its key with test-strength Argon2id: whoever "
                "copies it can guess its passphrase fast; replace it (`vault key passwd`, or "
                "`vault key add` then `vault key remove`)",
            )
        )
    if st.keys.rotation != OK:
        level = LEVEL_FAIL if st.keys.rotation == OVERDUE else LEVEL_WARN
        for reason in st.keys.reasons:
            found.append(Finding("keys", level, f"{reason}: run `vault key rotate`"))
    for epoch in st.keys.compromised_epochs:
        finish = (
            "`vault key rotate --reencrypt` resumes the interrupted re-encryption"
            if st.keys.retiring
            else f"finish it with `vault key retire {epoch}`"
        )
        found.append(
            Finding(
                "keys",
                LEVEL_FAIL,
                f"key epoch {epoch} was reported compromised (itself or with the master key) and "
                f"still exists: {finish}",
            )
        )
    if st.keys.master_rotation != OK:
        # A WARN, not a FAIL: replacing the master key removes every other slot, so it is a
        # planned change, which monitoring should announce but not page about.
        found.append(
            Finding(
                "keys",
                LEVEL_WARN,
                f"the master key is {'up to ' if st.keys.master_inferred else ''}"
                f"{st.keys.master_age_days} days old (policy: {st.keys.master_max_days}"
                + (
                    "; its creation was not recorded, so this counts from the first data key"
                    if st.keys.master_inferred
                    else ""
                )
                + "): plan `vault key rotate --master`",
            )
        )
    for lk, stale in st.locks:
        if stale:
            found.append(
                Finding(
                    "locks",
                    LEVEL_WARN,
                    f"a stale lock ({lk.operation}) from {lk.host}, pid {lk.pid}, last refreshed "
                    f"{lk.age(now)} ago: run `vault unlock`",
                )
            )
    return found


def status(
    repo: Repository,
    policy: KeyPolicy,
    now: datetime,
    drill_policy: DrillPolicy | None = None,
    copy_rpo_hours: int = 48,
    snapshots: list[Snapshot] | None = None,  # the caller's, when it keeps them
) -> Status:
    drill_policy = drill_policy or DrillPolicy()
    snapshots = repo.snapshots() if snapshots is None else snapshots
    latest = snapshots[-1] if snapshots else None
    host = socket.gethostname()
    locks = [(lk, lk.is_stale(now, host)) for lk in list_locks(repo.storage, repo.keyring)]
    records = drills(repo)
    drill = records[-1] if records else None
    drill_age = _age(now, drill["started"]) if drill else None
    result = Status(
        last_drill=drill,
        latest_drills={str(r.get("scenario", "drill")): r for r in records},
        open_actions=[
            {"drill_id": r["drill_id"], "corrective_actions": r["corrective_actions"]}
            for r in records
            if r.get("corrective_actions") and not r.get("approved")
        ],
        drill_age_seconds=drill_age,
        drill_overdue=drill_age is None or drill_age > drill_policy.frequency_days * 86400,
        location=repo.storage.location(),
        repository_id=repo.config.repository_id,
        snapshots=len(snapshots),
        latest=latest,
        latest_with_databases=next((s for s in reversed(snapshots) if s.databases), None),
        replicas=replicas(repo, snapshots, now),
        copy_rpo_hours=copy_rpo_hours,
        latest_age_seconds=int((now - latest.time).total_seconds()) if latest else None,
        keys=key_status(repo, policy, now),
        locks=locks,
        rpo_hours=drill_policy.rpo_hours,
        restore_projection=restore_projection(records, latest),
        full_restore_rto_hours=drill_policy.full_restore_rto_hours,
        last_check=jobstate.load(repo, jobstate.CHECK),
        break_glass=list((jobstate.load(repo, jobstate.BREAK_GLASS) or {}).get("pending", [])),
        space=space(repo, snapshots),
        object_lock=repo.config.object_lock,
        chain_problems=chain.anchor_problems(repo, layout.AUDIT, sealing.Kind.AUDIT, "audit event")
        + chain.anchor_problems(repo, layout.DRILLS, sealing.Kind.DRILL, "drill record"),
    )
    result.findings = _judge(result, now, drill_policy.frequency_days)
    return result
