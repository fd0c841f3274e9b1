"""The study-facing commands: `vault studies` (search the catalogs), `vault audit` (who
restored, searched or exported what), and `record_audit` which the other commands call."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vault import ids
from vault.cli.output import emit_json, table
from vault.cli.support import open_repo, opt, record_audit
from vault.errors import UsageError, VaultError
from vault.jobs.studies import (
    StudyFilter,
    find_studies,
    parse_date,
    parse_date_range,
    select_studies,
)
from vault.repo import audit, jobstate
from vault.repo.keys import RECOVERY
from vault.repo.repository import Repository
from vault.units import human_bytes, whole_number


def add_study_parsers(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command("studies", "list the DICOM studies held in the snapshots", cmd_studies)
    p.add_argument("--patient", metavar="ID", help="only this PatientID")
    p.add_argument("--name", metavar="TEXT", help="only patients whose name contains TEXT")
    p.add_argument("--since", metavar="DATE", help="only studies on or after DATE (YYYY-MM-DD)")
    p.add_argument("--until", metavar="DATE", help="only studies on or before DATE")
    p.add_argument(
        "--date",
        metavar="RANGE",
        help="a DICOM date or range: 20240301, 20240301-20240331, -20240331, 20240301- "
        "(dashes and the old dotted form accepted in each date)",
    )
    p.add_argument("--modality", metavar="M", help="only studies with modality M (CT, PX, IO…)")
    p.add_argument("--snapshot", metavar="S", help="only this snapshot (id, prefix or latest)")

    p = command(
        "export", "a de-identified copy of one study (teaching, research, testing)", cmd_export
    )
    p.add_argument("--study", required=True, metavar="UID|CATALOG_ID", help="the study")
    p.add_argument("--target", required=True, metavar="DIR", help="an empty or new directory")
    p.add_argument(
        "--deidentify",
        action="store_true",
        help="required: apply the DICOM PS3.15 Basic Profile to every header",
    )
    p.add_argument("--snapshot", default="latest", metavar="S", help="default: latest")
    p.add_argument(
        "--shift-dates",
        type=int,
        metavar="DAYS",
        help="shift every date by DAYS instead of removing dates (keeps intervals)",
    )
    p.add_argument("--include-photos", action="store_true", help="also export photographs (faces!)")
    descriptors = p.add_mutually_exclusive_group()
    descriptors.add_argument(
        "--list-descriptors",
        metavar="FILE",
        help="export nothing: write the study's descriptor values (descriptions, protocol "
        "names, …) to FILE (mode 0600) for a person to review; delete the lines that identify "
        "anyone and pass the file to --keep-descriptors",
    )
    descriptors.add_argument(
        "--keep-descriptors",
        metavar="FILE",
        help="the Clean Descriptors option: keep descriptor values listed in FILE (approved by a "
        "person, one KEYWORD<TAB>VALUE per line, as --list-descriptors writes); all others go",
    )
    p.add_argument(
        "--allow-burned-in",
        action="store_true",
        help="export files whose pixels may show patient text (BurnedInAnnotation YES, or absent "
        "on US, photos, secondary captures, pans); they are marked PatientIdentityRemoved NO "
        "and listed in MANIFEST.json",
    )

    p = command(
        "audit",
        "the audit log: init, backups, checks, restores, study listings and searches, exports, "
        "drills and their annotations, key add/remove/passwd/rotate/erase, prune, forget, "
        "repairs, unlock, object-lock extend; each names the OS user, host and key slot",
        cmd_audit,
    )
    p.add_argument("--since", metavar="DATE", help="only events on or after DATE (YYYY-MM-DD)")
    p.add_argument(
        "--target",
        metavar="PATH",
        help="only restores and exports to PATH (the log keeps a keyed token of each target, "
        "never the path, which can name a patient)",
    )
    p.add_argument(
        "--verify", action="store_true", help="check the hash chain (exit 1 if it is broken)"
    )
    p.add_argument(
        "--acknowledge",
        metavar="SEQ|all",
        help="acknowledge the break-glass open recorded as event SEQ, or every one waiting "
        "(status stops warning); not with the recovery key itself",
    )
    p.add_argument("--note", metavar="TEXT", default="", help="with --acknowledge: why it was ok")
    p.add_argument(
        "--record-scheduled",
        metavar="JOB",
        help="(used by `vault schedule run`) record that scheduled JOB failed before it ran "
        "or was missed, with --kind failed|missed and --reason TEXT",
    )
    p.add_argument("--kind", choices=["failed", "missed"], default="failed", help=argparse.SUPPRESS)
    p.add_argument(
        "--record-policies",
        metavar="DIR",
        help="(used by `vault schedule run`) record the policy files in DIR when they changed "
        "since the last time",
    )
    p.add_argument("--reason", default="", help=argparse.SUPPRESS)


def study_filter(args: argparse.Namespace) -> StudyFilter:
    since = parse_date(opt(args, "since"), "--since")
    until = parse_date(opt(args, "until"), "--until")
    if opt(args, "date"):
        if since or until:
            raise UsageError("--date goes alone, without --since or --until")
        since, until = parse_date_range(args.date)
    return StudyFilter(
        patient_id=opt(args, "patient"),
        name=opt(args, "name"),
        since=since,
        until=until,
        modality=opt(args, "modality"),
    )


def _date(text: str) -> str:
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 else text or "-"


def cmd_studies(args: argparse.Namespace) -> int:
    query = study_filter(args)
    repo = open_repo(args)
    only = repo.find_snapshot(args.snapshot) if args.snapshot else None
    rows = find_studies(repo, query, only)
    # Every listing reveals patient data (names, IDs), filtered or not: all are audited.
    if rows or query.identifying:
        record_audit(
            repo,
            "studies-search" if query.identifying else "studies-list",
            result="PASS",
            snapshot=only.id if only else "",
            catalog_ids=[r.study.catalog_id for r in rows],
            details={"filters": [k for k, v in vars(query).items() if v is not None]},
        )
    if opt(args, "json"):
        emit_json(
            [
                {
                    "catalog_id": r.study.catalog_id,
                    "study_instance_uid": r.study.study_uid,
                    "patient_id": r.study.patient_id,
                    "patient_name": r.study.patient_name,
                    "birth_date": r.study.birth_date,
                    "study_date": r.study.study_date,
                    "modalities": r.study.modalities,
                    "accession_number": r.study.accession,
                    "description": r.study.description,
                    "files": len(r.study.files),
                    "bytes": r.study.bytes,
                    "snapshots": r.snapshots,
                }
                for r in rows
            ]
        )
        return 0
    print(
        table(
            [
                "CATALOG ID",
                "DATE",
                "MODALITY",
                "PATIENT",
                "DESCRIPTION",
                "FILES",
                "SIZE",
                "SNAPSHOTS",
            ],
            [
                [
                    r.study.catalog_id,
                    _date(r.study.study_date),
                    ",".join(r.study.modalities),
                    f"{r.study.patient_id} {r.study.patient_name.replace('^', ' ')}".strip(),
                    r.study.description,
                    str(len(r.study.files)),
                    human_bytes(r.study.bytes),
                    ", ".join(ids.short(s) for s in r.snapshots[-3:])
                    + (f" (+{len(r.snapshots) - 3})" if len(r.snapshots) > 3 else ""),
                ]
                for r in rows
            ],
        )
    )
    print(f"{len(rows)} stud{'y' if len(rows) == 1 else 'ies'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    # Imported here: de-identification needs all of pydicom, which other commands never load.
    from vault.jobs.export import PIXEL_WARNING, export_study

    if not args.deidentify:
        raise UsageError(
            "vault export only makes de-identified copies (--deidentify); to get the original "
            "files use `vault restore --study`"
        )
    repo = open_repo(args)
    snapshot = repo.find_snapshot(args.snapshot)
    (study,) = select_studies(repo, snapshot, [args.study], None)
    target = Path(args.target).absolute()
    if args.list_descriptors:
        return _list_descriptors(args, repo, snapshot, study, target)
    approved = _approved(args.keep_descriptors) if args.keep_descriptors else None
    try:
        result = export_study(
            repo,
            snapshot,
            study,
            target,
            shift_days=args.shift_dates,
            include_photos=args.include_photos,
            allow_burned_in=args.allow_burned_in,
            approved_descriptors=approved,
        )
    except VaultError:
        record_audit(
            repo,
            "export",
            result="FAIL",
            snapshot=snapshot.id,
            catalog_ids=[study.catalog_id],
            target=audit.target_token(repo, str(target)),
        )
        raise
    record_audit(
        repo,
        "export",
        result="PASS",
        snapshot=snapshot.id,
        catalog_ids=[study.catalog_id],
        target=audit.target_token(repo, str(target)),
        details={
            "files": result.files,
            "dates_shifted": args.shift_dates is not None,
            "burned_in_allowed": result.burned_in,
        },
    )
    print(f"vault: warning: {PIXEL_WARNING}", file=sys.stderr)
    if opt(args, "json"):
        emit_json(
            {
                "catalog_id": study.catalog_id,
                "target": str(target),
                "files": result.files,
                "skipped_non_dicom": result.skipped_non_dicom,
                "skipped_photos": result.skipped_photos,
                "burned_in_exported": result.burned_in,
                "manifest": str(target / "MANIFEST.json"),
                "profile": "DICOM PS3.15 Basic Application Level Confidentiality Profile "
                "(Table E.1-1)",
                "dates": "shifted" if args.shift_dates is not None else "removed",
                "pixel_data": "unchanged (burned-in text and faces are not removed)",
                "outcome": "PASS",
            }
        )
    else:
        print(
            f"exported {result.files} de-identified DICOM file(s) of study {study.catalog_id} "
            f"to {target}"
            + (f"; left out {result.skipped_photos} photo(s)" if result.skipped_photos else "")
            + (
                f" and {result.skipped_non_dicom} non-DICOM file(s)"
                if result.skipped_non_dicom
                else ""
            )
            + "; MANIFEST.json lists what was done"
        )
        if result.burned_in:
            print(
                f"vault: warning: {result.burned_in} exported file(s) may show patient text in "
                "their pixels (marked PatientIdentityRemoved NO in the file and the manifest)",
                file=sys.stderr,
            )
    return 0


DESCRIPTORS_HEADER = (
    "# Descriptor values of one study, for review before a de-identified export. Delete every\n"
    "# line whose value could identify a person (a name, a date, an ID, a place); keep the\n"
    "# rest, then: vault export ... --deidentify --keep-descriptors THIS_FILE\n"
)


def _list_descriptors(
    args: argparse.Namespace, repo: Repository, snapshot: Any, study: Any, target: Path
) -> int:
    from vault.jobs.export import study_descriptors

    pairs = study_descriptors(repo, snapshot, study, target.parent, include_photos=True)
    path = Path(args.list_descriptors)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} exists; the descriptor list goes to a new file") from None
    except OSError as exc:
        raise UsageError(f"cannot create {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(DESCRIPTORS_HEADER)
        for keyword, value in pairs:
            handle.write(f"{keyword}\t{_one_line(value)}\n")
    record_audit(
        repo,
        "export-descriptors-listed",
        result="PASS",
        snapshot=snapshot.id,
        catalog_ids=[study.catalog_id],
        details={"values": len(pairs)},
    )
    if opt(args, "json"):
        emit_json({"catalog_id": study.catalog_id, "file": str(path), "values": len(pairs)})
    else:
        print(f"wrote {len(pairs)} descriptor value(s) of study {study.catalog_id} to {path}")
    return 0


def _one_line(value: str) -> str:
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def _approved(file: str) -> set[str]:
    """The values a person approved: the VALUE column of a --list-descriptors file."""
    try:
        text = Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{file} is not UTF-8 text (write it with --list-descriptors)") from None
    approved = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        _keyword, tab, value = line.partition("\t")
        if not tab:
            raise UsageError(f"{file}, line {number}: not KEYWORD<TAB>VALUE")
        approved.add(_unescape(value))
    return approved


def _unescape(value: str) -> str:
    out, chars = [], iter(value)
    for ch in chars:
        if ch != "\\":
            out.append(ch)
            continue
        nxt = next(chars, "")
        out.append({"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}.get(nxt, "\\" + nxt))
    return "".join(out)


def _slot_label(event: audit.AuditEvent) -> str:
    """Which key slot opened the repository: its name, or its short id; break-glass marked."""
    if not event.slot:
        return ""
    who = event.slot_name or ids.short(event.slot)
    return f" ({who}, RECOVERY KEY)" if event.slot_kind == "recovery" else f" ({who})"


def _record_policies(repo: Repository, directory: Path) -> int:
    """A policy change is a change to how the practice is protected: audited with the names
    of the files that changed and the SHA-256 of each (the contents stay in the files)."""
    files = sorted(directory.glob("*.toml"))
    now = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    before = (jobstate.load(repo, jobstate.POLICIES) or {}).get("files", {})
    if now == before:
        return 0
    changed = {
        "added": sorted(set(now) - set(before)),
        "removed": sorted(set(before) - set(now)),
        "changed": sorted(n for n in set(now) & set(before) if now[n] != before[n]),
        "sha256": now,
    }
    audit.record(repo, "policy-change", result="PASS", details=changed)
    jobstate.save(repo, jobstate.POLICIES, {"files": now})
    return 0


def _acknowledge(repo: Repository, which: str, note: str) -> int:
    if repo.slot_kind == RECOVERY:
        # Every open with the recovery key is itself a break-glass open: acknowledging with it
        # would record a new one, and let the key holder clear their own trace.
        raise UsageError(
            "acknowledge break-glass opens with a passphrase or key file, not the recovery key "
            "(add one with `vault key add` first)"
        )
    state = jobstate.load(repo, jobstate.BREAK_GLASS) or {}
    pending = list(state.get("pending", []))
    waiting = ", ".join(str(p.get("event")) for p in pending) or "none"
    if which == "all":
        chosen = [int(p["event"]) for p in pending if isinstance(p.get("event"), int)]
        if not chosen:
            raise UsageError("no break-glass open is waiting for acknowledgement")
    elif (wanted := whole_number(which)) is not None and any(
        p.get("event") == wanted for p in pending
    ):
        chosen = [wanted]
    else:
        raise UsageError(
            f"audit event {which} is not a break-glass open waiting for acknowledgement "
            f"(waiting: {waiting})"
        )
    for seq in chosen:  # one recorded acknowledgement per open
        record_audit(
            repo, "break-glass-acknowledged", result="PASS", details={"event": seq, "note": note}
        )
    left = [p for p in pending if p.get("event") not in chosen]
    jobstate.save(repo, jobstate.BREAK_GLASS, {"pending": left})
    for seq in chosen:
        print(f"acknowledged the break-glass open of audit event {seq}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    since = parse_date(args.since, "--since")
    repo = open_repo(args)
    if args.acknowledge is not None:
        return _acknowledge(repo, args.acknowledge, args.note)
    if args.record_policies:
        return _record_policies(repo, Path(args.record_policies))
    if args.record_scheduled:
        audit.record(
            repo,
            "scheduled-job",
            result="FAIL",
            details={"job": args.record_scheduled, "kind": args.kind, "reason": args.reason},
        )
        if opt(args, "json"):
            emit_json({"recorded": args.record_scheduled, "kind": args.kind})
        return 0
    report = audit.read_log(repo, verify=args.verify)
    events = [e for e in report.events if since is None or e.time[:10].replace("-", "") >= since]
    if args.target:
        token = audit.target_token(repo, args.target)
        events = [e for e in events if e.target == token]
    if opt(args, "json"):
        emit_json(
            {
                "events": [asdict(e) for e in events],
                "verified": args.verify,
                "problems": report.problems,
                "outcome": "PASS" if report.ok else "FAIL",
            }
        )
    else:
        rows = [
            [
                str(e.seq),
                e.time,
                f"{e.actor}@{e.host}" + _slot_label(e),
                e.action,
                e.result,
                ids.short(e.snapshot) if e.snapshot else "-",
                ",".join(e.catalog_ids[:3]) + (" …" if len(e.catalog_ids) > 3 else "") or "-",
            ]
            for e in events
        ]
        print(table(["#", "TIME (UTC)", "WHO", "ACTION", "RESULT", "SNAPSHOT", "STUDIES"], rows))
        for problem in report.problems:
            print(f"vault: error: {problem}", file=sys.stderr)
        if args.verify and report.ok:
            print(f"audit chain intact: {len(report.events)} event(s)")
    return 0 if report.ok else 1
