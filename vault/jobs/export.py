"""The export job: a de-identified copy of one study for teaching, research or testing.

The study's files are restored (and verified against their SHA-256) into a private scratch
directory beside the target, de-identified (vault.dicom.deidentify) into the target under neutral
names (IMG0001.dcm, … — original names may carry patient names), and the scratch copy is
deleted. Non-DICOM files and photographs are left out unless asked for. Files whose pixels may
show burned-in patient text are refused (the whole export, before anything is written) unless
allowed; `MANIFEST.json` beside the files says what was done to each, and names no patient,
study or catalog id.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vault.dicom.catalog import Study
from vault.dicom.deidentify import Deidentifier, burned_in, descriptors, is_photo, read, write
from vault.errors import UsageError, VaultError
from vault.format.snapshot import Snapshot
from vault.jobs.restore.restorer import RestoreOptions, restore
from vault.repo.repository import Repository

PIXEL_WARNING = (
    "header-only de-identification: burned-in text and recognizable facial features in the "
    "pixel data (CBCT volumes, photographs) are NOT removed; review images before sharing"
)


@dataclass
class ExportResult:
    files: int = 0
    skipped_non_dicom: int = 0
    skipped_photos: int = 0
    burned_in: int = 0  # exported although their pixels may show patient text (allowed)
    problems: list[str] = field(default_factory=list)


class BurnedInRefused(UsageError):
    """Some files may show patient text in their pixels and the export was not allowed them."""


def export_study(
    repo: Repository,
    snapshot: Snapshot,
    study: Study,
    target: Path,
    *,
    shift_days: int | None = None,
    include_photos: bool = False,
    allow_burned_in: bool = False,
    approved_descriptors: set[str] | None = None,
) -> ExportResult:
    target = target.absolute()
    if target.exists() and any(target.iterdir()):
        raise UsageError(f"export target {target} is not empty")
    target.mkdir(parents=True, exist_ok=True)
    scratch = _scratch(target.parent)
    result = ExportResult()
    try:
        chosen = _read_study(repo, snapshot, study, scratch, include_photos, result)
        # Judged on every file before any is written: a refused export leaves nothing behind.
        suspects = [burned_in(ds) for ds in chosen]
        flagged = [s for s in suspects if s.suspected]
        if flagged and not allow_burned_in:
            raise BurnedInRefused(
                f"export of study {study.catalog_id} refused: {len(flagged)} of {len(chosen)} "
                f"file(s) may show patient text burned into the pixels ({flagged[0].reason}); "
                "review the images and pass --allow-burned-in to export them anyway"
            )
        deid = Deidentifier(shift_days=shift_days, approved_descriptors=approved_descriptors)
        entries = []
        for number, (ds, suspect) in enumerate(zip(chosen, suspects, strict=True), start=1):
            modality = str(ds.get("Modality", "") or "")
            sop_class = str(ds.get("SOPClassUID", "") or "")
            deid.apply(ds, identity_removed=not suspect.suspected)
            name = f"IMG{number:04d}.dcm"
            write(ds, str(target / name))
            entries.append(
                {
                    "file": name,
                    "modality": modality,
                    "sop_class_uid": sop_class,
                    "patient_identity_removed": not suspect.suspected,
                    "burned_in_text": {"suspected": suspect.suspected, "reason": suspect.reason},
                }
            )
        result.files = len(entries)
        result.burned_in = len(flagged)
        _write_manifest(
            target, entries, shift_days=shift_days, reviewed=approved_descriptors is not None
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return result


def study_descriptors(
    repo: Repository, snapshot: Snapshot, study: Study, near: Path, *, include_photos: bool
) -> list[tuple[str, str]]:
    """The distinct descriptor values of a study's DICOM files (what `--keep-descriptors` may
    keep once a person approved them), sorted; read from a private scratch copy."""
    scratch = _scratch(near)
    try:
        chosen = _read_study(repo, snapshot, study, scratch, include_photos, ExportResult())
        return sorted({pair for ds in chosen for pair in descriptors(ds)})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _scratch(near: Path) -> Path:
    near.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".vault-export-", dir=near))
    os.chmod(scratch, 0o700)
    return scratch


def _read_study(
    repo: Repository,
    snapshot: Snapshot,
    study: Study,
    scratch: Path,
    include_photos: bool,
    result: ExportResult,
) -> list[Any]:
    """The study's DICOM files, restored (verified) into `scratch` and read."""
    restored = restore(repo, snapshot, RestoreOptions(scratch, tuple(study.files), verify=True))
    if restored.problems:
        raise VaultError(f"{len(restored.problems)} file(s) of the study failed to restore")
    chosen = []
    for path in sorted(study.files):
        source = os.fsencode(scratch) + os.fsencode(path)
        try:
            ds = read(os.fsdecode(source))
        except Exception:
            result.skipped_non_dicom += 1
            continue
        if "DirectoryRecordSequence" in ds:
            result.skipped_non_dicom += 1  # a DICOMDIR names the original files: left out
            continue
        if is_photo(ds) and not include_photos:
            result.skipped_photos += 1
            continue
        chosen.append(ds)
    return chosen


def _write_manifest(
    target: Path, entries: list[dict[str, object]], *, shift_days: int | None, reviewed: bool
) -> None:
    from vault import __version__
    from vault.dicom.profile import TABLE_EDITION

    doc = {
        "tool": f"vault {__version__}",
        "profile": f"DICOM PS3.15 Annex E, Table E.1-1 ({TABLE_EDITION}), header only",
        "options": {
            "retain_longitudinal_temporal_modified_dates": shift_days is not None,
            "clean_descriptors_by_review": reviewed,
        },
        "pixel_data": PIXEL_WARNING,
        "files": entries,
    }
    (target / "MANIFEST.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
