"""De-identified export: nothing identifying survives in any element, the files still open,
UIDs are replaced consistently, dates are removed or shifted, photos are left out."""

from __future__ import annotations

import json
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
    files = sorted(target.glob("*.dcm"))
    assert (target / "MANIFEST.json").exists()
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
    exported_pixels = {pydicom.dcmread(p).PixelData for p in target.glob("*.dcm")}
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
    ds = pydicom.dcmread(next(target.glob("*.dcm")))
    assert ds.StudyDate == (date(2024, 1, 5) - timedelta(days=30)).strftime("%Y%m%d")
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    events = vault("audit", "-r", repo, "--json").json()["events"]
    assert events[-1]["action"] == "export" and events[-1]["result"] == "PASS"


def test_export_without_deidentify_is_refused(
    repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    result = vault("export", "-r", repo, "--study", "x", "--target", tmp_path / "o")
    assert result.code == 2 and "restore --study" in result.err


def _study_with(share: Path, uid: str, **attributes: str) -> None:
    for i in range(2):
        ds = _ct_slice(share / f"img{i}.dcm", uid, "DEMO-0088", i)
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
        ds.save_as(share / f"img{i}.dcm", enforce_file_format=True)


@pytest.mark.parametrize(
    "attributes",
    [{"BurnedInAnnotation": "YES"}, {"Modality": "PX"}, {"Modality": "US"}],
    ids=["flag-yes", "pan-without-flag", "ultrasound-without-flag"],
)
def test_pixels_that_may_show_patient_text_are_refused_unless_allowed(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, attributes: dict[str, str]
) -> None:
    share = tmp_path / "share"
    uid = "1.2.826.0.1.3680043.8.498.5151"
    _study_with(share, uid, **attributes)
    assert vault("backup", "-r", repo, share).code == 0
    (study,) = vault("studies", "-r", repo, "--json").json()
    target = tmp_path / "out"
    refused = vault("export", "-r", repo, "--study", uid, "--deidentify", "--target", target)
    assert refused.code == 2 and study["catalog_id"] in refused.err
    assert "--allow-burned-in" in refused.err
    assert not list(target.glob("*.dcm"))  # nothing written before the refusal
    allowed = vault(
        "export", "-r", repo, "--study", uid, "--deidentify", "--target", tmp_path / "ok",
        "--allow-burned-in", "--json",
    )  # fmt: skip
    assert allowed.code == 0, allowed.err
    assert allowed.json()["burned_in_exported"] == 2
    manifest = json.loads((tmp_path / "ok" / "MANIFEST.json").read_text())
    assert all(f["burned_in_text"]["suspected"] for f in manifest["files"])
    assert "DEMO" not in json.dumps(manifest) and study["catalog_id"] not in json.dumps(manifest)
    for path in (tmp_path / "ok").glob("*.dcm"):
        assert pydicom.dcmread(path).PatientIdentityRemoved == "NO"  # never claimed removed


def test_a_flag_saying_no_burned_in_text_exports_a_pan(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    share = tmp_path / "share"
    uid = "1.2.826.0.1.3680043.8.498.5252"
    _study_with(share, uid, Modality="PX", BurnedInAnnotation="NO")
    assert vault("backup", "-r", repo, share).code == 0
    done = vault("export", "-r", repo, "--study", uid, "--deidentify", "--target", tmp_path / "o")
    assert done.code == 0, done.err


def test_export_never_prints_header_values_in_pydicom_warnings(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, recwarn: pytest.WarningsRecorder
) -> None:
    """Values invalid for their VR make pydicom warn, quoting them: not one may surface."""
    share = tmp_path / "share"
    uid = "1.2.826.0.1.3680043.8.498.5353"
    _study_with(share, uid, PatientBirthDate="SMITH-BORN-1970", InstitutionName="X" * 80)
    assert vault("backup", "-r", repo, share).code == 0
    done = vault("export", "-r", repo, "--study", uid, "--deidentify", "--target", tmp_path / "o")
    assert done.code == 0, done.err
    assert "SMITH-BORN" not in done.out + done.err and "XXXXXXXX" not in done.out + done.err
    assert not [w for w in recwarn if "SMITH" in str(w.message) or "XXXX" in str(w.message)]


def test_real_structured_reports_and_rt_objects_export_valid(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    """SR and RT files of pydicom's corpus: the export reads back, keeps its content tree."""
    from tests.test_dicom_corpus import CORPUS

    share = tmp_path / "share"
    share.mkdir()
    picked = [p for p in CORPUS if p.name in ("test-SR.dcm", "rtplan.dcm", "rtstruct.dcm")]
    assert picked
    for path in picked:
        (share / path.name).write_bytes(path.read_bytes())
    assert vault("backup", "-r", repo, share).code == 0
    for study in vault("studies", "-r", repo, "--json").json():
        target = tmp_path / study["catalog_id"]
        done = vault(
            "export", "-r", repo, "--study", study["catalog_id"], "--deidentify",
            "--target", target, "--allow-burned-in",
        )  # fmt: skip
        assert done.code == 0, done.err
        for path in target.glob("*.dcm"):
            out = pydicom.dcmread(path)
            source = next(
                pydicom.dcmread(p, force=True)
                for p in share.iterdir()
                if pydicom.dcmread(p, force=True).SOPClassUID == out.SOPClassUID
            )
            if "ContentSequence" in source:
                assert len(out.ContentSequence) == len(source.ContentSequence)
                assert all("ValueType" in item for item in out.ContentSequence)


def test_descriptors_a_person_approved_are_kept_and_nothing_else(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    """The Clean Descriptors option done by review: list the values, delete the identifying
    ones, export with the rest."""
    share = tmp_path / "share"
    uid = "1.2.826.0.1.3680043.8.498.5454"
    _study_with(
        share, uid, SeriesDescription="CBCT 8x8 FOV, 0.2 mm", StudyDescription="Smith recall\tx"
    )
    assert vault("backup", "-r", repo, share).code == 0
    listing = tmp_path / "descriptors.txt"
    listed = vault(
        "export", "-r", repo, "--study", uid, "--deidentify", "--target", tmp_path / "no",
        "--list-descriptors", listing,
    )  # fmt: skip
    assert listed.code == 0, listed.err
    assert listing.stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "no").exists() or not list((tmp_path / "no").glob("*.dcm"))
    lines = [line for line in listing.read_text().splitlines() if not line.startswith("#")]
    assert "SeriesDescription\tCBCT 8x8 FOV, 0.2 mm" in lines
    assert "StudyDescription\tSmith recall\\tx" in lines  # a tab written escaped, one line
    # The reviewer deletes the line that names the patient.
    listing.write_text("\n".join(line for line in lines if "Smith" not in line) + "\n")
    target = tmp_path / "teaching"
    done = vault(
        "export", "-r", repo, "--study", uid, "--deidentify", "--target", target,
        "--keep-descriptors", listing,
    )  # fmt: skip
    assert done.code == 0, done.err
    for path in target.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        assert ds.SeriesDescription == "CBCT 8x8 FOV, 0.2 mm"
        assert "StudyDescription" not in ds or "Smith" not in str(ds.StudyDescription)
        assert "113105" in [c.CodeValue for c in ds.DeidentificationMethodCodeSequence]
    manifest = json.loads((target / "MANIFEST.json").read_text())
    assert manifest["options"]["clean_descriptors_by_review"] is True
    actions = [e["action"] for e in vault("audit", "-r", repo, "--json").json()["events"]]
    assert "export-descriptors-listed" in actions
    # Without a reviewed list, descriptors go as the Basic Profile says.
    plain = tmp_path / "plain"
    assert vault("export", "-r", repo, "--study", uid, "--deidentify", "--target", plain).code == 0
    assert all("SeriesDescription" not in pydicom.dcmread(p) for p in plain.glob("*.dcm"))
