"""De-identified export: nothing identifying survives in any element, the files still open,
UIDs are replaced consistently, dates are removed or shifted, photos are left out."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from tests.conftest import RunCli
from tests.repos import RepoHandle
from tests.test_catalog import _ct_slice

REGISTERED = "1.2.840.10008."


def _identifiers(paths: list[Path]) -> tuple[set[str], set[str]]:
    """(texts, uids): every name, ID and birth date, and every UID that identifies an instance
    (not a DICOM-registered or class UID) anywhere in the source files."""
    texts: set[str] = set()
    uids: set[str] = set()

    def visit(ds: Dataset) -> None:
        for element in ds:
            value = str(element.value)
            if element.VR == "SQ":
                for item in element.value:
                    visit(item)
            elif element.VR == "PN" and value:
                texts.add(value)
            elif element.VR == "UI" and value and not value.startswith(REGISTERED):
                if not element.keyword.endswith("ClassUID"):
                    uids.add(value)
            elif element.keyword in ("PatientID", "PatientBirthDate", "AccessionNumber") and value:
                texts.add(value)

    for path in paths:
        ds = pydicom.dcmread(path)
        visit(ds.file_meta)
        visit(ds)
    return texts, uids


def _all_values(ds: Dataset) -> list[str]:
    values: list[str] = []
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                values.extend(_all_values(item))
        elif element.VR not in ("OB", "OW", "OF", "OD", "UN"):
            values.append(str(element.value))
    return values


@pytest.fixture
def exported(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, archive: Path
) -> tuple[dict[str, Any], Path, list[Path]]:
    vault("backup", "-r", repo, archive)
    study = next(s for s in vault("studies", "-r", repo, "--json").json() if s["files"] > 5)
    sources = [
        p
        for p in archive.rglob("*.dcm")
        if str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID)
        == study["study_instance_uid"]
    ]
    target = tmp_path / "teaching"
    result = vault(
        "export",
        "-r",
        repo,
        "--study",
        study["catalog_id"],
        "--deidentify",
        "--target",
        target,
        "--json",
    )
    assert result.code == 0, result.err
    assert "NOT removed" in result.err  # the pixel warning is always printed
    return result.json(), target, sources


def test_export_leaves_no_identifier_in_any_element(
    exported: tuple[dict[str, Any], Path, list[Path]],
) -> None:
    doc, target, sources = exported
    files = sorted(target.iterdir())
    assert doc["files"] == len(files) == len(sources) > 5
    texts, uids = _identifiers(sources)
    assert any(t.startswith("DEMO^") for t in texts) and len(uids) > len(sources)
    study_uids, series_uids = set(), set()
    for path in files:
        assert "DEMO" not in path.name
        ds = pydicom.dcmread(path)  # still a valid DICOM file
        values = _all_values(ds.file_meta) + _all_values(ds)
        for text in texts:
            assert not any(text in v for v in values), f"{text!r} survived in {path.name}"
        assert not uids & set(values), f"an original UID survived in {path.name}"
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        assert ds.PatientName == "ANONYMOUS" and ds.get("PatientBirthDate", "") == ""
        assert ds.get("StudyDate", "") == ""  # no date shift asked: dates removed
        assert not any(e.tag.is_private for e in ds.iterall())
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        study_uids.add(ds.StudyInstanceUID)
        series_uids.add(ds.SeriesInstanceUID)
    assert len(study_uids) == 1 and len(series_uids) == 1  # replaced consistently


def test_pixel_data_is_unchanged(exported: tuple[dict[str, Any], Path, list[Path]]) -> None:
    _, target, sources = exported
    source_pixels = {pydicom.dcmread(p).PixelData for p in sources}
    exported_pixels = {pydicom.dcmread(p).PixelData for p in target.iterdir()}
    assert exported_pixels == source_pixels


def test_dates_can_be_shifted_and_photos_are_left_out(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    share = tmp_path / "share"
    uid = "1.2.826.0.1.3680043.8.498.4242"
    for i in range(3):
        _ct_slice(share / f"ct{i}.dcm", uid, "DEMO-0077", i)
    photo = _ct_slice(share / "face.dcm", uid, "DEMO-0077", 9)
    photo.Modality = "XC"
    photo.save_as(share / "face.dcm", enforce_file_format=True)
    vault("backup", "-r", repo, share)
    target = tmp_path / "out"
    doc = vault(
        "export",
        "-r",
        repo,
        "--study",
        uid,
        "--deidentify",
        "--target",
        target,
        "--shift-dates",
        "-30",
        "--json",
    ).json()
    assert doc["files"] == 3 and doc["skipped_photos"] == 1
    ds = pydicom.dcmread(next(target.iterdir()))
    assert ds.StudyDate == (date(2024, 1, 5) - timedelta(days=30)).strftime("%Y%m%d")
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    events = vault("audit", "-r", repo, "--json").json()["events"]
    assert events[-1]["action"] == "export" and events[-1]["result"] == "PASS"


def test_export_without_deidentify_is_refused(
    repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    result = vault("export", "-r", repo, "--study", "x", "--target", tmp_path / "o")
    assert result.code == 2 and "restore --study" in result.err
