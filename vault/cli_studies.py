"""The `vault studies` command: DICOM studies in the catalogs, with patient and date filters."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from vault import ids
from vault.cli_support import open_repo, opt
from vault.output import emit_json, human_bytes, table
from vault.studies import StudyFilter, find_studies, parse_date


def add_study_parsers(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command("studies", "list the DICOM studies held in the snapshots", cmd_studies)
    p.add_argument("--patient", metavar="ID", help="only this PatientID")
    p.add_argument("--name", metavar="TEXT", help="only patients whose name contains TEXT")
    p.add_argument("--since", metavar="DATE", help="only studies on or after DATE (YYYY-MM-DD)")
    p.add_argument("--until", metavar="DATE", help="only studies on or before DATE")
    p.add_argument("--modality", metavar="M", help="only studies with modality M (CT, PX, IO…)")
    p.add_argument("--snapshot", metavar="S", help="only this snapshot (id, prefix or latest)")


def study_filter(args: argparse.Namespace) -> StudyFilter:
    return StudyFilter(
        patient_id=opt(args, "patient"),
        name=opt(args, "name"),
        since=parse_date(opt(args, "since"), "--since"),
        until=parse_date(opt(args, "until"), "--until"),
        modality=opt(args, "modality"),
    )


def _date(text: str) -> str:
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 else text or "-"


def cmd_studies(args: argparse.Namespace) -> int:
    query = study_filter(args)
    repo = open_repo(args)
    only = repo.find_snapshot(args.snapshot) if args.snapshot else None
    rows = find_studies(repo, query, only)
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
