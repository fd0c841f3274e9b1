"""Restore drills: timed, verified recovery tests whose record is audit evidence.

A drill picks studies from a snapshot's catalog (seeded, stratified so a CBCT, a 2-D radiograph
and a photo/other file are included when present) or takes everything (`full`, newest studies
first), restores them one by one into a private scratch directory, verifies every file against
the SHA-256 recorded at backup, measures, compares with the drill policy, deletes the scratch
data, and appends a record to the sealed, hash-chained drill log (`drills/`).

Records name studies only by catalog id and other files by an opaque keyed id: no patient
names, IDs, birth dates, UIDs, accession numbers or paths.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vault import __version__
from vault.dicom.catalog import Study
from vault.errors import UsageError, VaultError
from vault.format import crypto
from vault.format.snapshot import Snapshot
from vault.format.tree import FILE
from vault.jobs.restore.restorer import RestoreOptions, restore, walk
from vault.policy.databases import DatabaseDrillPolicy
from vault.policy.files import DrillPolicy
from vault.policy.pacs import PacsEndpoint
from vault.progress import NoProgress, Progress
from vault.repo.keys import RECOVERY, Secret
from vault.repo.repository import Repository
from vault.whoami import os_user

CBCT = {"CT"}
RADIOGRAPH = {"PX", "IO", "DX", "CR", "DR", "RG", "MG"}
PHOTO = {"XC", "VL", "OP", "ES"}


@dataclass(frozen=True)
class DrillOptions:
    sample: int | None = None  # None: policy's sample_studies
    full: bool = False
    seed: int | None = None
    target: Path | None = None  # keep the restored files here (default: scratch, deleted)
    operator: str = ""
    objective: str = ""
    compare_source: bool = False
    # With compare_source: compare with this tree instead of the live paths (a whole restore on
    # a new machine, checked against fresh restores of a sample straight from the repository).
    source_root: Path | None = None
    recovery_secret: Secret | None = None  # --key-check: the break-glass path
    # --into-pacs: each restored study is also sent into this PACS and asked back (C-FIND).
    into_pacs: PacsEndpoint | None = None
    # --database: each database dump is loaded into a scratch database and checked.
    database_check: DatabaseDrillPolicy | None = None


@dataclass
class _Item:
    kind: str  # "study" | "file"
    ref: str  # catalog id, or the opaque id of a non-DICOM file
    category: str  # cbct | radiograph | photo | other
    paths: list[str] = field(default_factory=list)


class _FirstByte:
    """Progress that notes when the first restored byte was written."""

    def __init__(self, inner: Progress, started: float) -> None:
        self.inner = inner
        self.started = started
        self.first: float | None = None

    def start(self, label: str, total: int | None, unit: str = "B") -> None:
        self.inner.start(label, total, unit)

    def advance(self, amount: int) -> None:
        if self.first is None and amount:
            self.first = time.perf_counter() - self.started
        self.inner.advance(amount)

    def set_total(self, total: int) -> None:
        self.inner.set_total(total)

    def finish(self) -> None:
        self.inner.finish()


def _category(study: Study) -> str:
    modalities = set(study.modalities)
    if modalities & CBCT:
        return "cbct"
    if modalities & RADIOGRAPH:
        return "radiograph"
    if modalities & PHOTO:
        return "photo"
    return "other"


def _opaque_id(repo: Repository, path: str) -> str:
    """A stable id for a non-DICOM file that reveals nothing about its path."""
    return (
        "f-"
        + crypto.mac(
            repo.keyring.mac_key, b"drill-file:" + path.encode(errors="surrogateescape")
        ).hex()[:14]
    )


def _choose(
    repo: Repository, snapshot: Snapshot, options: DrillOptions, policy: DrillPolicy, seed: int
) -> tuple[list[_Item], str]:
    catalog = repo.load_catalog(snapshot)
    studies = list(catalog.studies.values()) if catalog else []
    in_studies = {p for s in studies for p in s.files}
    others = sorted(
        os.fsdecode(i.path)
        for i in walk(repo, snapshot, [])
        if i.node.type == FILE and os.fsdecode(i.path) not in in_studies
    )
    study_items = [
        _Item("study", s.catalog_id, _category(s), list(s.files))
        for s in sorted(
            studies,
            key=lambda s: (s.study_date, s.catalog_id),
            reverse=policy.priority == "newest-first",
        )
    ]
    other_items = [_Item("file", _opaque_id(repo, p), "other", [p]) for p in others]
    if options.full:
        order = policy.priority.replace("-", " ")
        return study_items + other_items, f"full: every study ({order}), then other files"
    rng = random.Random(seed)
    wanted = options.sample if options.sample is not None else policy.sample_studies
    chosen: list[_Item] = []
    for category in ("cbct", "radiograph", "photo"):
        pool = [i for i in study_items if i.category == category]
        if pool:
            chosen.append(rng.choice(pool))
    if other_items and not any(i.category == "photo" for i in chosen):
        chosen.append(rng.choice(other_items))  # "a photo/other file"
    rest = [i for i in study_items if i not in chosen]
    rng.shuffle(rest)
    chosen.extend(rest[: max(0, wanted - len(chosen))])
    method = (
        f"seeded random sample of {wanted} stud{'y' if wanted == 1 else 'ies'}, stratified: one "
        "CBCT, one 2-D radiograph and one photo/other file when present"
    )
    return chosen, method


def _compare_with_source(
    path: str, restored: Path, node_size: int, node_mtime: int, strict: bool = False
) -> str:
    """PASS/FAIL against the live file, or SKIPPED when it is gone or has changed since (a
    live file may change after a backup). `strict` (a restored tree, which must be the
    snapshot exactly): gone or changed is FAIL."""
    live = os.fsencode(path)
    try:
        st = os.stat(live)
    except OSError:
        return "FAIL" if strict else "SKIPPED"
    if st.st_size != node_size or st.st_mtime_ns != node_mtime:
        return "FAIL" if strict else "SKIPPED"
    with open(live, "rb") as a, open(restored, "rb") as b:
        while True:
            x, y = a.read(1 << 20), b.read(1 << 20)
            if x != y:
                return "FAIL"
            if not x:
                return "PASS"


def run_drill(
    repo: Repository,
    snapshot: Snapshot,
    options: DrillOptions,
    policy: DrillPolicy,
    *,
    progress: Progress | None = None,
    request_stats: Any = None,
) -> dict[str, Any]:
    """Run a drill and return its record (not yet stored: vault.evidence.drill_log.store_record)."""
    progress = progress or NoProgress()
    repo.load_index()
    started_at = datetime.now(UTC)
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(2**31)
    failures: list[str] = []
    try:
        items, method = _choose(repo, snapshot, options, policy, seed)
    except VaultError as exc:  # the snapshot itself is damaged: that is a drill result too
        items, method = [], "none: the snapshot could not be read"
        failures.append(f"snapshot {snapshot.id[:8]} could not be read: {exc}")
    if not items and not failures:
        raise UsageError(f"snapshot {snapshot.id[:8]} holds nothing to drill")
    scratch_made = options.target is None
    base = (
        Path(tempfile.mkdtemp(prefix="vault-drill-"))
        if options.target is None
        else options.target.absolute()
    )
    if scratch_made:
        os.chmod(base, 0o700)  # restored PHI is readable by the operator only
    else:
        base.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    clock = time.perf_counter()
    first_byte = _FirstByte(progress, clock)
    total_bytes = total_files = 0
    nodes = (
        {os.fsdecode(i.path): i.node for i in walk(repo, snapshot, [])}
        if options.compare_source
        else {}
    )
    try:
        for number, item in enumerate(items):
            t0 = time.perf_counter()
            target = base / f"item{number:04d}"
            entry: dict[str, Any] = {"kind": item.kind, "id": item.ref, "category": item.category}
            try:
                outcome = restore(
                    repo,
                    snapshot,
                    RestoreOptions(target, tuple(item.paths), verify=True),
                    first_byte,
                )
                problems = [reason for _, reason in outcome.problems]
                entry.update(
                    files=outcome.files,
                    bytes=outcome.bytes,
                    verified=outcome.verified,
                    bytes_downloaded=outcome.bytes_downloaded,
                )
            except VaultError as exc:
                problems = [str(exc)]
                entry.update(files=0, bytes=0, verified=0, bytes_downloaded=0)
            entry["seconds"] = round(time.perf_counter() - t0, 3)
            # Reasons name objects (packs) and hashes, never file paths.
            entry["problems"] = [_scrub(p, item.paths) for p in problems]
            entry["result"] = "FAIL" if problems else "PASS"
            if options.compare_source and not problems:
                verdicts = [
                    _compare_with_source(
                        str(options.source_root / p.lstrip("/")) if options.source_root else p,
                        target / p.lstrip("/"),
                        nodes[p].size,
                        nodes[p].mtime_ns,
                        strict=options.source_root is not None,
                    )
                    for p in item.paths
                    if p in nodes
                ]
                entry["source_comparison"] = {v: verdicts.count(v) for v in set(verdicts)}
                if "FAIL" in verdicts:
                    entry["result"] = "FAIL"
                    entry["problems"].append(
                        "the restored tree lacks a file or holds different bytes, size or time"
                        if options.source_root
                        else "restored bytes differ from the live source file"
                    )
            entry["restore_result"] = entry["result"]  # before any application check
            if options.into_pacs is not None and item.kind == "study" and not problems:
                from vault.evidence.drill_pacs import check_in_pacs  # pynetdicom: only here

                entry["pacs"] = check_in_pacs(options.into_pacs, target, item.paths, item.ref)
                if entry["pacs"]["result"] == "FAIL":
                    entry["result"] = "FAIL"
                    entry["problems"] += entry["pacs"]["problems"]
            if entry["result"] == "FAIL":
                failures.append(f"{item.kind} {item.ref}: " + "; ".join(entry["problems"]))
            total_bytes += entry["bytes"]
            total_files += entry["files"]
            results.append(entry)
    finally:
        if scratch_made:
            shutil.rmtree(base, ignore_errors=True)
    if options.into_pacs is not None and not any(r.get("pacs") for r in results):
        # Asked for the PACS check and none ran (no study sampled, or none restored): the
        # drill must not read as if the PACS had been proven.
        failures.append(
            f"PACS check: no study was checked in {options.into_pacs.name} (none in the sample "
            "restored)"
        )
    wall = time.perf_counter() - clock
    throughput = total_bytes / wall if wall > 0 else 0.0
    archive_bytes = snapshot.stats.bytes
    projected = archive_bytes / throughput if throughput else None
    age = (started_at - snapshot.time).total_seconds()
    # A recovery time is met only by a restore that succeeded: a failed or missing restore
    # measured nothing, and must never read as "< 1 ms PASS".
    studies = [r for r in results if r["kind"] == "study"]
    # The recovery time is the restore's: a PACS check that failed after it does not make the
    # restore itself slow or failed (it fails the drill, below, with its own reason).
    studies_failed = any(r.get("restore_result", r["result"]) == "FAIL" for r in studies)
    complete = bool(results) and not failures
    objectives = [
        _objective(
            "single-study RTO",
            max((r["seconds"] for r in studies), default=None) if not studies_failed else None,
            policy.single_study_rto_minutes * 60.0,
            unmet="a study restore failed" if studies_failed else "",
            unmeasured="no study in the sample" if results else "nothing was restored",
        ),
        _objective(
            "full-restore RTO" + ("" if options.full else " (projected)"),
            (wall if complete else None) if options.full else (projected if complete else None),
            policy.full_restore_rto_hours * 3600.0,
            unmet="the restore did not complete" if options.full and not complete else "",
            unmeasured="no data restored to project from"
            if complete
            else "nothing restored completely to project from",
        ),
        _objective("RPO (snapshot age)", age, policy.rpo_hours * 3600.0),
    ]
    for objective in objectives:
        if objective["result"] == "FAIL":
            measured = objective["measured_seconds"]
            failures.append(
                f"{objective['name']}: "
                + (f"measured {measured:.0f} s" if measured is not None else objective["note"])
                + f", target {objective['target_seconds']:.0f} s"
            )
    database_results = None
    if options.database_check is not None:
        from vault.evidence.drill_database import check_dumps

        database_results, database_failures = check_dumps(repo, snapshot, options.database_check)
        failures += database_failures
    key_check = None
    if options.recovery_secret is not None:
        key_check = _key_check(repo, options.recovery_secret)
        if key_check["result"] == "FAIL":
            failures.append(f"key check: {key_check['reason']}")
    scratch_gone = not scratch_made or not base.exists()
    return {
        "type": "drill",
        "drill_id": str(uuid.uuid4()),
        "tool_version": __version__,
        "host": socket.gethostname(),
        "os_user": os_user(),
        "operator": options.operator or os_user(),
        "witness": "",
        "objective": options.objective
        or "Verify that backed-up imaging studies can be restored intact within the practice's "
        "recovery objectives (HIPAA 164.308(a)(7)(ii)(D); NIST SP 800-53 CP-9(2)).",
        # What restored files were compared with, besides their recorded SHA-256 (never a path).
        "compared_with": (
            ("a restored tree" if options.source_root else "the live source files")
            if options.compare_source
            else None
        ),
        "scenario": ("full restore" if options.full else "sampled restore")
        + " to an alternate location"
        + (f", studies into PACS {options.into_pacs.name}" if options.into_pacs else "")
        + (", database dumps loaded and checked" if options.database_check else ""),
        "scope": {
            "repository_id": repo.config.repository_id,
            "snapshot_id": snapshot.id,
            "snapshot_time": snapshot.time.isoformat(),
        },
        "started": started_at.isoformat(),
        "finished": datetime.now(UTC).isoformat(),
        "sample": {
            "method": method,
            "seed": seed,
            "items": len(items),
            "studies": sum(1 for i in items if i.kind == "study"),
        },
        "timing": {
            "total_seconds": round(wall, 3),
            "time_to_first_byte_seconds": round(first_byte.first, 3)
            if first_byte.first is not None
            else None,
        },
        "volume": {
            "files": total_files,
            "bytes": total_bytes,
            "throughput_bytes_per_second": round(throughput),
            "archive_bytes": archive_bytes,
            "projected_full_restore_seconds": round(projected, 3) if projected else None,
            "storage_requests": request_stats() if callable(request_stats) else None,
        },
        "objectives": objectives,
        "items": results,
        "key_check": key_check,
        **({"databases": database_results} if database_results is not None else {}),
        "scratch": {"used": scratch_made, "deleted": scratch_gone},
        "result": "FAIL" if failures else "PASS",
        "failure_reasons": failures,
        "lessons_learned": "",
        "corrective_actions": "",
        "reviewer": "",
        "approved": None,
    }


NOT_MEASURED = "NOT MEASURED"


def _objective(
    name: str, measured: float | None, target: float, *, unmet: str = "", unmeasured: str = ""
) -> dict[str, Any]:
    """PASS or FAIL against the target; FAIL with `unmet` when the restore it times failed;
    NOT MEASURED (which fails nothing by itself) when there was nothing to time."""
    if unmet:
        return {"name": name, "measured_seconds": None, "target_seconds": target,
                "result": "FAIL", "note": unmet}  # fmt: skip
    if measured is None:
        return {"name": name, "measured_seconds": None, "target_seconds": target,
                "result": NOT_MEASURED, "note": unmeasured}  # fmt: skip
    return {
        "name": name,
        "measured_seconds": round(measured, 3),
        "target_seconds": target,
        "result": "PASS" if measured <= target else "FAIL",
    }


def _scrub(reason: str, paths: list[str]) -> str:
    for path in sorted(paths, key=len, reverse=True):
        reason = reason.replace(path, "<file>")
    return reason


def _key_check(repo: Repository, secret: Secret) -> dict[str, Any]:
    """PASS only when the secret is a recovery key and opens the repository through a recovery
    slot: the ordinary passphrase opening it proves nothing about the break-glass path."""
    started = time.perf_counter()
    opened_kind = ""
    try:
        opened = Repository.open(repo.storage, secret)
        opened_kind = next((s.kind for s in opened.slots() if s.id == opened.slot_id), "")
    except VaultError:
        pass
    result = "PASS" if secret.kind == RECOVERY and opened_kind == RECOVERY else "FAIL"
    doc: dict[str, Any] = {
        "step": "open the repository with the recovery key (break-glass)",
        "kind": secret.kind,
        "opened_with": opened_kind or None,
        "result": result,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if result == "FAIL":
        doc["reason"] = (
            "what was given is not a recovery key (a passphrase or key file opens the "
            "repository, but that does not prove the break-glass path)"
            if secret.kind != RECOVERY
            else "the recovery key did not open the repository"
        )
    return doc
