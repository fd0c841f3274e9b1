"""The export job: a de-identified copy of one study for teaching, research or testing.

The study's files are restored (and verified against their SHA-256) into a private scratch
directory beside the target, de-identified (vault.dicom.deidentify) into the target under neutral
names (IMG0001.dcm, … — original names may carry patient names), and the scratch copy is
deleted. Non-DICOM files and photographs are left out unless asked for.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from vault.dicom.catalog import Study
from vault.dicom.deidentify import Deidentifier, is_photo, read
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
    problems: list[str] = field(default_factory=list)


def export_study(
    repo: Repository,
    snapshot: Snapshot,
    study: Study,
    target: Path,
    *,
    shift_days: int | None = None,
    include_photos: bool = False,
) -> ExportResult:
    target = target.absolute()
    if target.exists() and any(target.iterdir()):
        raise UsageError(f"export target {target} is not empty")
    target.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".vault-export-", dir=target.parent))
    os.chmod(scratch, 0o700)
    result = ExportResult()
    try:
        restored = restore(repo, snapshot, RestoreOptions(scratch, tuple(study.files), verify=True))
        if restored.problems:
            raise VaultError(f"{len(restored.problems)} file(s) of the study failed to restore")
        deid = Deidentifier(shift_days=shift_days)
        number = 0
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
            deid.apply(ds)
            number += 1
            ds.save_as(target / f"IMG{number:04d}.dcm", enforce_file_format=True)
        result.files = number
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return result
