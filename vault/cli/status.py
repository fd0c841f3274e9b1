"""`vault status`: the one page an admin or compliance officer reads, as text, JSON or a
Prometheus textfile."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vault import ids
from vault.cli.output import emit_json
from vault.cli.support import iso_utc, local_time, open_repo, opt
from vault.evidence import metrics, pack_render
from vault.evidence.database_moment import database_moment
from vault.evidence.pack import gather
from vault.evidence.status import Status, status
from vault.policy.files import load_drill_policy, load_key_policy, load_schedule_policy, policy_dir
from vault.units import human_bytes, human_seconds


def add_status_parsers(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command(
        "status",
        "last backup against the RPO, last check and drill, keys, space, locks: OK, WARN or "
        "FAIL (exit 1 on FAIL)",
        cmd_status,
    )
    p.add_argument(
        "--policy-dir",
        metavar="DIR",
        help="directory with keys.toml and drill.toml (default: $VAULT_POLICY_DIR, else "
        "built-in defaults)",
    )
    p.add_argument(
        "--metrics-file",
        metavar="FILE",
        help="also write the status as a Prometheus textfile-collector file (e.g. "
        "/var/lib/node_exporter/textfile/vault.prom)",
    )

    r = command(
        "report",
        "the contingency evidence pack for the compliance officer (no PHI)",
        cmd_report,
    )
    r.add_argument("--format", choices=["html", "md"], default="html", help="default: html")
    r.add_argument("--out", metavar="FILE", help="write here (default: standard output)")
    r.add_argument(
        "--policy-dir",
        metavar="DIR",
        help="directory with the policy files the pack describes (default: $VAULT_POLICY_DIR)",
    )


def status_document(st: Status, now: datetime, key_policy: dict[str, Any]) -> dict[str, Any]:
    drill, k, lock = st.last_drill, st.keys, st.object_lock
    return {
        "repository": st.location,
        "repository_id": st.repository_id,
        "snapshots": st.snapshots,
        "rpo_seconds": st.rpo_hours * 3600,
        "last_backup": {
            "snapshot_id": st.latest.id,
            "time": iso_utc(st.latest.time),
            "age_seconds": st.latest_age_seconds,
            "files_not_saved": st.latest.stats.errors,
            "databases": database_moment(st.latest_with_databases),
        }
        if st.latest
        else None,
        "last_check": st.last_check,
        "replicas": st.replicas,
        "copy_rpo_seconds": st.copy_rpo_hours * 3600,
        "last_drill": {
            "drill_id": drill["drill_id"],
            "started": drill["started"],
            "result": drill["result"],
            "age_seconds": st.drill_age_seconds,
        }
        if drill
        else None,
        "drill_overdue": st.drill_overdue,
        "projected_full_restore": {
            "seconds": round(st.restore_projection.seconds, 1),
            "bytes": st.restore_projection.bytes,
            "throughput_bytes_per_second": round(st.restore_projection.throughput_bytes_per_second),
            "from_drill": st.restore_projection.drill_id,
            "rto_seconds": st.full_restore_rto_hours * 3600,
        }
        if st.restore_projection
        else None,
        "keys": {
            "current_epoch": k.current_epoch,
            "epoch_created": k.epoch_created,
            "epoch_age_seconds": k.epoch_age_seconds,
            "epoch_objects": k.epoch_objects,
            "rotation": k.rotation,
            "reasons": k.reasons,
            "destroyed_epochs": k.destroyed_epochs,
            "slots": k.slots,
            "weak_slots": k.weak_slots,
            "compromised_epochs": k.compromised_epochs,
            "master_key": {
                "id": k.master_id,
                "created": k.master_created,
                "age_days": k.master_age_days,
                "rotation": k.master_rotation,
            },
            "policy": key_policy,
        },
        "space": {
            "stored_bytes": st.space.stored_bytes,
            "unique_bytes": st.space.unique_bytes,
            "logical_bytes": st.space.logical_bytes,
            "dedup_ratio": round(st.space.dedup_ratio, 3),
            "compression_ratio": round(st.space.compression_ratio, 3),
        },
        "object_lock": {"mode": lock.mode, "days": lock.days} if lock else None,
        "locks": [{"description": lk.describe(now), "stale": stale} for lk, stale in st.locks],
        "findings": [asdict(f) for f in st.findings],
        "level": st.level,
        "outcome": "PASS" if st.ok else "FAIL",
    }


def _print_page(st: Status, now: datetime) -> None:
    print(f"vault status: {st.level}")
    print(f"repository   {st.location} ({ids.short(st.repository_id)}), {st.snapshots} snapshot(s)")
    if st.latest and st.latest_age_seconds is not None:
        print(
            f"last backup  {local_time(st.latest.time)} ({st.latest_age_seconds / 3600:.1f} h "
            f"ago; RPO {st.rpo_hours} h), snapshot {ids.short(st.latest.id)}"
        )
        moment = database_moment(st.latest_with_databases)
        for dump in moment["dumps"] if moment else []:
            skew = dump.get("skew_seconds")
            print(
                f"  database   {dump['source']}/{dump['database']}: {dump['result']}, dumped "
                f"{str(dump['started'])[:19].replace('T', ' ')} UTC"
                + (f", {human_seconds(skew)} from the file walk" if skew is not None else "")
            )
    else:
        print("last backup  none yet")
    for replica in st.replicas:
        name = replica["location"] or replica["replica_id"][:8]
        last = (replica["last_copy"] or "never")[:19].replace("T", " ")
        print(
            f"replica      {name}: last copy {last} UTC, "
            f"{replica['lag_seconds'] / 3600:.1f} h behind (RPO {st.copy_rpo_hours} h)"
            + (
                " , failing since " + replica["failed_since"][:19]
                if replica["failed_since"]
                else ""
            )
        )
    check = st.last_check
    if check:
        every = str(check.get("all_packs_read") or "not yet")[:19].replace("T", " ")
        print(
            f"last check   {str(check.get('time'))[:19].replace('T', ' ')} UTC: "
            f"{check.get('outcome')}; every pack last read back: {every}"
        )
    else:
        print("last check   none yet")
    drill = st.last_drill
    if drill and st.drill_age_seconds is not None:
        print(
            f"last drill   {drill['started'][:19].replace('T', ' ')} UTC "
            f"({st.drill_age_seconds // 86400} days ago): {drill['result']}"
        )
    else:
        print("last drill   none yet")
    projected = st.restore_projection
    if projected:
        print(
            f"full restore projected {human_seconds(projected.seconds)} for "
            f"{human_bytes(projected.bytes)} at {projected.throughput_bytes_per_second / 1e6:.1f} "
            f"MB/s (drill {projected.drill_id[:8]}); RTO {st.full_restore_rto_hours} h"
        )
    k = st.keys
    print(
        f"data key     epoch {k.current_epoch}, {k.epoch_age_seconds // 86400} days old, "
        f"{k.epoch_objects:,} objects: rotation {k.rotation}"
    )
    print(f"master key   {k.master_id}, {k.master_age_days} days old: rotation {k.master_rotation}")
    slots = ", ".join(f"{n} {kind}" for kind, n in sorted(k.slots.items()))
    print(f"key slots    {slots}")
    sp = st.space
    print(
        f"space        {human_bytes(sp.stored_bytes)} stored for {human_bytes(sp.logical_bytes)} "
        f"in snapshots (dedup {sp.dedup_ratio:.1f}x, compression {sp.compression_ratio:.2f}x)"
    )
    lock = st.object_lock
    print(
        f"object lock  {lock.mode.lower()} mode, {lock.days} days"
        if lock
        else "object lock  off (see docs/storage.md for immutable backups)"
    )
    for lk, stale in st.locks:
        print(f"lock         {'stale ' if stale else ''}{lk.describe(now)}")
    for finding in st.findings:
        print(f"{finding.level:<5}        {finding.topic}: {finding.message}")


def cmd_status(args: argparse.Namespace) -> int:
    directory = policy_dir(args.policy_dir)
    key_policy = load_key_policy(directory)
    drill_policy = load_drill_policy(directory)
    copy_rpo = load_schedule_policy(directory)[0].copy_rpo_hours
    repo = open_repo(args)
    now = datetime.now(UTC)
    st = status(repo, key_policy, now, drill_policy, copy_rpo)
    if args.metrics_file:
        metrics.write(Path(args.metrics_file), metrics.render(st))
    if opt(args, "json"):
        emit_json(status_document(st, now, asdict(key_policy)))
    else:
        _print_page(st, now)
    return 0 if st.ok else 1


def cmd_report(args: argparse.Namespace) -> int:
    directory = policy_dir(args.policy_dir)
    key_policy, drill_policy = load_key_policy(directory), load_drill_policy(directory)
    repo = open_repo(args)
    pack = gather(repo, key_policy, drill_policy, directory, datetime.now(UTC))
    text = (pack_render.as_html if args.format == "html" else pack_render.as_markdown)(pack)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote the evidence pack ({pack.level}) to {args.out}")
    else:
        sys.stdout.write(text)
    return 0
