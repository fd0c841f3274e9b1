"""The contingency evidence pack: one document a compliance officer hands an auditor.

What it shows and why (docs/operations.md, COMPLIANCE §42): the current status; the backup
schedule and recent success history (from the audit log and the snapshots); how data is
encrypted and where the keys live, with rotation dates; the retention policy; Object Lock; the
integrity checks; the restore drills and their open corrective actions; the audit log's own
integrity. Gathered here as plain sections, rendered by vault.evidence.pack_render. No PHI: studies
appear nowhere, snapshots only by id, times and sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from vault import __version__, ids
from vault.errors import UsageError
from vault.evidence import drill_log, drill_report
from vault.evidence.database_moment import database_moment
from vault.evidence.status import Status, status
from vault.policy.files import (
    DrillPolicy,
    KeyPolicy,
    RolesPolicy,
    SchedulePolicy,
    load_backup_policy,
    load_retention_policy,
    load_roles_policy,
    load_schedule_policy,
)
from vault.repo import append_guard, audit, chain
from vault.repo.repository import Repository
from vault.units import human_bytes

HISTORY_DAYS = 30


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)  # paragraphs
    facts: list[tuple[str, str]] = field(default_factory=list)
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)


@dataclass
class EvidencePack:
    title: str
    generated: str
    level: str
    sections: list[Section]


def _day(iso: str) -> str:
    return iso[:16].replace("T", " ")


def _status_section(st: Status) -> Section:
    section = Section("Current status", facts=[("Overall", st.level)])
    if st.latest and st.latest_age_seconds is not None:
        age = f"{st.latest_age_seconds / 3600:.1f} h ago (RPO {st.rpo_hours} h)"
        section.facts.append(("Last backup", f"{_day(st.latest.time.isoformat())} UTC, {age}"))
        moment = database_moment(st.latest_with_databases)
        for dump in moment["dumps"] if moment else []:
            skew = dump.get("skew_seconds")
            section.facts.append(
                (
                    f"Database {dump['source']}/{dump['database']}",
                    f"dump {dump['result']}, started {str(dump['started'])[:19]} UTC"
                    + (f"; {skew:.0f} s from the file walk (skew)" if skew is not None else ""),
                )
            )
    for replica in st.replicas:
        # HHS's ransomware guidance: a copy the practice network cannot reach, kept current.
        last = _day(replica["last_copy"]) + " UTC" if replica["last_copy"] else "never"
        section.facts.append(
            (
                f"Replica {replica['location'] or replica['replica_id'][:8]}",
                f"last copy {last}, {replica['lag_seconds'] / 3600:.1f} h behind (RPO "
                f"{st.copy_rpo_hours} h)"
                + (
                    f"; failing since {_day(replica['failed_since'])} UTC"
                    if replica["failed_since"]
                    else ""
                )
                + (
                    "; still holds the keys of erased epoch(s) "
                    + ", ".join(map(str, replica["erase_pending"]))
                    if replica["erase_pending"]
                    else ""
                ),
            )
        )
    section.headers = ["level", "area", "finding"]
    section.rows = [[f.level, f.topic, f.message] for f in st.findings]
    if not st.findings:
        section.text.append("No findings: every area is within policy.")
    return section


def _backup_section(
    repo: Repository,
    st: Status,
    events: list[audit.AuditEvent],
    schedule: SchedulePolicy | None,
    now: datetime,
) -> Section:
    section = Section("Backups: schedule and recent history")
    if schedule:
        section.facts.append(("Schedule", f"every day at {schedule.backup_at} (local time)"))
        section.facts.append(
            (
                "Verification",
                f"every {schedule.check_day} at {schedule.check_at}, reading "
                f"{schedule.check_read_percent} % of the stored data in rotation",
            )
        )
    else:
        section.facts.append(("Schedule", "no schedule.toml given (--policy-dir)"))
    since = now - timedelta(days=HISTORY_DAYS)
    # Scheduled backups that failed before they ran (a pre-backup hook) or were missed leave
    # no backup event of their own; the scheduler records them, and they count as failures.
    recent = [
        e
        for e in events
        if datetime.fromisoformat(e.time) >= since
        and (
            e.action == "backup"
            or (e.action == "scheduled-job" and e.details.get("job") == "backup")
        )
    ]
    passed = sum(1 for e in recent if e.result == "PASS")
    missed = sum(1 for e in recent if e.details.get("kind") == "missed")
    rate = f"{passed / len(recent):.0%}" if recent else "no backup runs recorded"
    counted = f"{len(recent)} ({passed} successful, {len(recent) - passed - missed} failed"
    counted += f", {missed} missed): {rate}"
    section.facts.append((f"Backup runs, last {HISTORY_DAYS} days", counted))
    snapshots = [s for s in repo.snapshots() if s.time >= since]
    days = {s.time.date() for s in snapshots}
    created = datetime.fromisoformat(repo.config.created)
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    span = min(HISTORY_DAYS, max(1, (now - created).days + 1))
    if span == HISTORY_DAYS:
        label, value = f"Days with a snapshot, last {HISTORY_DAYS} days", f"{len(days)} of {span}"
    else:
        label = "Days with a snapshot"
        value = f"{len(days)} of {span}, since the repository was created on {created.date()}"
    section.facts.append((label, value))
    section.facts.append(("Snapshots kept", str(st.snapshots)))
    section.headers = ["snapshot", "time (UTC)", "files", "size", "new data", "unreadable files"]
    section.rows = [
        [
            ids.short(s.id),
            _day(s.time.isoformat()),
            str(s.stats.files),
            human_bytes(s.stats.bytes),
            human_bytes(s.stats.bytes_added),
            str(s.stats.errors),
        ]
        for s in snapshots[-14:]
    ]
    return section


def _storage_section(repo: Repository, events: list[audit.AuditEvent]) -> Section:
    """Where the backups live, how they get there, and the provider's agreement (HIPAA
    164.308(b), 164.312(e)): what the storage reports now, and what init recorded."""
    section = Section("Storage and its provider")
    section.facts.append(("Location", repo.storage.location()))
    for name, value in append_guard.capabilities(repo).items():
        section.facts.append((name[:1].upper() + name[1:], value))
    lock = repo.config.object_lock
    section.facts.append(
        (
            "Object Lock retention",
            f"{lock.mode.lower()} mode, {lock.days} days on every object" if lock else "off",
        )
    )
    init = next((e for e in events if e.action == "init"), None)
    baa = init.details.get("baa_acknowledged", "unrecorded") if init else "unrecorded"
    words = {
        True: f"acknowledged at set-up ({_day(init.time)} UTC, {init.actor}@{init.host})"
        if init
        else "acknowledged",
        False: "NOT acknowledged at set-up: obtain the provider's BAA and keep it on file",
        None: "not applicable (storage on the practice's own machine)",
        "unrecorded": "not recorded (repository made before vault asked at set-up)",
    }
    section.facts.append(("Business Associate Agreement", words.get(baa, str(baa))))
    return section


def _crypto_section(repo: Repository, st: Status, key_policy: KeyPolicy) -> Section:
    k = st.keys
    section = Section(
        "Encryption and key management",
        text=[
            "Every stored object except the key slots and the format marker is encrypted and "
            "authenticated with AES-256-GCM under a key derived (HKDF-SHA-256) for that object "
            "from the current data-key epoch; chunk names are keyed hashes, so nothing about "
            "the files leaks through object names. Data is compressed (zstd) before encryption.",
            "The master key is never stored in the clear: each key slot wraps it under a key "
            "derived from a passphrase with Argon2id, or under a key file. A recovery key "
            "printed at set-up is the break-glass slot, kept off-site. Keys are held by the "
            "practice, never by the storage provider.",
        ],
        facts=[
            ("Key slots", ", ".join(f"{n} {kind}" for kind, n in sorted(k.slots.items()))),
            ("Current data-key epoch", f"{k.current_epoch}, created {_day(k.epoch_created)} UTC"),
            (
                "Rotation policy",
                f"at least every {key_policy.max_epoch_age_days} days or "
                f"{key_policy.max_objects_per_epoch:,} objects; now: {k.rotation}",
            ),
        ],
        headers=["key", "created (UTC)", "state", "reported compromised", "ended (UTC)"],
        rows=[
            [
                f"data-key epoch {e.id}",
                _day(e.created),
                e.state,
                _day(e.compromised) if e.compromised else "-",
                _day(e.retired) if e.retired else "-",
            ]
            for e in repo.keyring.epochs
        ]
        + [
            [
                f"master key {m.id}",
                _day(m.created) + (" (inferred)" if m.inferred else ""),
                m.state,
                _day(m.compromised) if m.compromised else "-",
                _day(m.deactivated) if m.deactivated else "-",
            ]
            for m in repo.keyring.masters
        ],
    )
    master = repo.keyring.current_master
    section.facts.append(
        (
            "Master key",
            f"{master.id}, {k.master_age_days} days old (usage period: "
            f"{key_policy.max_master_age_days} days): rotation {k.master_rotation}",
        )
    )
    if k.compromised_epochs:
        section.facts.append(
            (
                "Compromised keys still in use",
                ", ".join(f"epoch {e}" for e in k.compromised_epochs)
                + ": the compromise workflow was interrupted",
            )
        )
    return section


def _retention_section(directory: Path | None, st: Status) -> Section:
    section = Section("Retention and immutability")
    try:
        policy = load_retention_policy(None, directory)
    except UsageError:
        section.facts.append(("Retention policy", "no retention.toml given (--policy-dir)"))
    else:
        rules = [
            f"{name.removeprefix('keep_')} {value}"
            for name, value in (
                ("keep_last", policy.keep_last),
                ("keep_daily", policy.keep_daily),
                ("keep_weekly", policy.keep_weekly),
                ("keep_monthly", policy.keep_monthly),
                ("keep_yearly", policy.keep_yearly),
            )
            if value
        ]
        section.facts.append(("Keep", ", ".join(rules)))
        section.facts.append(
            (
                "Never forgotten",
                f"anything younger than {policy.minimum_days} "
                f"days; snapshots tagged {', '.join(policy.hold_tags) or '-'}",
            )
        )
    lock = st.object_lock
    section.facts.append(
        (
            "Object Lock",
            f"{lock.mode.lower()} mode, every object immutable for {lock.days} days"
            if lock
            else "off (storage without Object Lock)",
        )
    )
    return section


def _integrity_section(st: Status, audit_report: audit.AuditReport) -> Section:
    check = st.last_check or {}
    section = Section("Integrity verification")
    section.facts.append(
        (
            "Last check",
            f"{_day(str(check['time']))} UTC: {check['outcome']}, "
            f"{check.get('packs_read', 0)} packs read back"
            if check
            else "none recorded",
        )
    )
    every = str(check.get("all_packs_read") or "")
    section.facts.append(
        ("Every pack last read back", f"{_day(every)} UTC" if every else "not yet")
    )
    sp = st.space
    section.facts.append(
        (
            "Stored",
            f"{human_bytes(sp.stored_bytes)} for {human_bytes(sp.logical_bytes)} in snapshots "
            f"(dedup {sp.dedup_ratio:.1f}x, compression {sp.compression_ratio:.2f}x)",
        )
    )
    chain = "intact" if audit_report.ok else f"{len(audit_report.problems)} problem(s)"
    section.facts.append(("Audit log", f"{len(audit_report.events)} events, hash chain {chain}"))
    if audit_report.head_seq:
        section.facts.append(
            (
                "Audit log head",
                f"event #{audit_report.head_seq}, SHA-256 {audit_report.head_sha256} (keep this "
                "page: it anchors the chain)",
            )
        )
    return section


def _drill_section(records: list[dict[str, Any]], history: chain.ChainReport) -> Section:
    s = drill_report.summary(records)
    section = Section("Restore drills")
    rate = f"{s['pass_rate']:.0%}" if s["pass_rate"] is not None else "-"
    section.facts.append(("Drills recorded", f"{s['drills']} (pass rate {rate})"))
    if history.head_seq:
        intact = "intact" if history.ok else f"{len(history.problems)} problem(s)"
        section.facts.append(
            (
                "Drill record chain head",
                f"record #{history.head_seq}, SHA-256 {history.head_sha256} (chain {intact})",
            )
        )
    section.headers = ["drill", "started (UTC)", "scenario", "items", "result", "review"]
    section.rows = [
        [
            str(r["drill_id"])[:8],
            _day(str(r["started"])),
            str(r["scenario"]),
            str(r["sample"]["items"]),
            str(r["result"]),
            drill_report.review_summary(r),
        ]
        for r in records[-12:]
    ]
    actions = s["open_corrective_actions"]
    section.text.append(
        "Open corrective actions: none."
        if not actions
        else "Open corrective actions: "
        + "; ".join(f"drill {a['drill_id'][:8]}: {a['corrective_actions']}" for a in actions)
    )
    return section


HISTORY_LISTED = 20  # restore, export and key events shown in full


def _scope_section(
    repo: Repository,
    directory: Path | None,
    drill_policy: DrillPolicy,
    schedule: SchedulePolicy | None,
) -> Section:
    """What is backed up, from where, and against which targets."""
    section = Section("Scope and recovery objectives")
    backup = load_backup_policy(directory) if directory else None
    sources = ", ".join(backup.sources) if backup and backup.sources else "(no backup.toml given)"
    section.facts.append(("Sources (backup.toml)", sources))
    snapshots = repo.snapshots()
    # What the snapshots really hold, beside what the policy file says they should: a source
    # missing from the snapshots (or one no policy names) is for the reader to see.
    backed = sorted({(s.host, p) for s in snapshots for p in s.paths})
    section.facts.append(
        (
            "Backed up (from the snapshots)",
            "; ".join(f"{host}:{path}" for host, path in backed) or "nothing yet",
        )
    )
    hosts = sorted({s.host for s in snapshots})
    section.facts.append(("Hosts backed up", ", ".join(hosts) or "none yet"))
    section.facts.append(
        ("Backup schedule", f"daily at {schedule.backup_at}" if schedule else "(no schedule.toml)")
    )
    section.facts.append(("Recovery point objective (RPO)", f"{drill_policy.rpo_hours} h"))
    section.facts.append(
        ("Single-study recovery time objective", f"{drill_policy.single_study_rto_minutes} min")
    )
    section.facts.append(
        ("Full-restore recovery time objective", f"{drill_policy.full_restore_rto_hours} h")
    )
    return section


def _activity_section(events: list[audit.AuditEvent], now: datetime) -> Section:
    """Restores, exports and key events of the last 90 days: who, when, which studies (by
    catalog id only)."""
    since = now - timedelta(days=90)
    recent = [e for e in events if datetime.fromisoformat(e.time) >= since]
    section = Section("Restores, exports and key events, last 90 days")
    restores = [e for e in recent if e.action in ("restore", "export")]
    keys = [e for e in recent if e.action.startswith("key-") or e.action.startswith("break-glass")]
    section.facts.append(("Restores and exports", str(len(restores))))
    section.facts.append(("Key events", str(len(keys))))
    shown = (restores + keys)[-HISTORY_LISTED:]
    section.headers = ["#", "time (UTC)", "who", "action", "result", "studies (catalog ids)"]
    section.rows = [
        [
            str(e.seq),
            _day(e.time),
            f"{e.actor}@{e.host}" + (f" ({e.slot_name})" if e.slot_name else ""),
            e.action,
            e.result,
            ", ".join(e.catalog_ids) or "-",
        ]
        for e in sorted(shown, key=lambda e: e.seq)
    ]
    if not shown:
        section.text.append("None in the last 90 days.")
    return section


def _roles_section(roles: RolesPolicy) -> Section:
    named = [
        ("Security official", roles.security_official),
        ("Privacy officer", roles.privacy_officer),
        ("Contingency plan owner", roles.contingency_plan_owner),
        ("Reviewer", roles.reviewer),
    ]
    section = Section(
        "Roles and sign-off",
        facts=[(role, name or "(not named in roles.toml)") for role, name in named],
    )
    section.text.append(
        f"Reviewed by: {roles.reviewer or '______________________'}    "
        "Signature: ______________________    Date: ____________"
    )
    return section


def gather(
    repo: Repository,
    key_policy: KeyPolicy,
    drill_policy: DrillPolicy,
    directory: Path | None,
    now: datetime,
) -> EvidencePack:
    schedule = load_schedule_policy(directory)[0] if directory else None
    copy_rpo = schedule.copy_rpo_hours if schedule else SchedulePolicy().copy_rpo_hours
    st = status(repo, key_policy, now, drill_policy, copy_rpo)
    audit_report = audit.read_log(repo, verify=True)
    history = drill_log.history(repo, verify=True)
    records = drill_log.merged(history)
    return EvidencePack(
        title="Contingency evidence pack",
        generated=f"{now.isoformat(timespec='seconds')} by vault {__version__}, repository "
        f"{ids.short(repo.config.repository_id)} at {repo.storage.location()}",
        level=st.level,
        sections=[
            _status_section(st),
            _backup_section(repo, st, audit_report.events, schedule, now),
            _storage_section(repo, audit_report.events),
            _crypto_section(repo, st, key_policy),
            _retention_section(directory, st),
            _integrity_section(st, audit_report),
            _drill_section(records, history),
            _scope_section(repo, directory, drill_policy, schedule),
            _activity_section(audit_report.events, now),
            _roles_section(load_roles_policy(directory)),
        ],
    )
