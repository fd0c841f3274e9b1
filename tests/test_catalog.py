"""The DICOM study catalog: what it records, and restoring one study on demand."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from tests.conftest import PASSWORD, RunCli, sample_archive
from tests.repos import RepoHandle
from vault.format.pack import BlobType


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The generator's own account of the `archive` fixture (same seed and scale)."""
    return dict(sample_archive.generate(tmp_path_factory.mktemp("m") / "a", seed=3, scale=0.3))


def _studies(vault: RunCli, repo: RepoHandle, *extra: str) -> list[dict[str, Any]]:
    result = vault("studies", "-r", repo, "--json", *extra)
    assert result.code == 0, result.err
    return list(result.json())


def _files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _ct_slice(path: Path, study_uid: str, patient: str, index: int, size: int = 64) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[study_uid, "series"])
    ds.StudyTime = "101500"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.PatientName = f"DEMO^{patient}"
    ds.PatientID = patient
    ds.StudyDate = "20240105"
    ds.Modality = "CT"
    ds.InstanceNumber = index
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    rng = np.random.default_rng(index + hash(study_uid) % 1000)
    ds.PixelData = rng.normal(1000, 200, size * size).clip(0, 4095).astype("<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds


def test_catalog_lists_every_generated_study_with_its_files(
    repo: RepoHandle, vault: RunCli, archive: Path, manifest: dict[str, Any]
) -> None:
    assert vault("backup", "-r", repo, archive).code == 0
    found = {s["study_instance_uid"]: s for s in _studies(vault, repo)}
    expected = {s["study_uid"]: s for s in manifest["studies"] if s["kind"] != "photo"}
    assert set(found) == set(expected)
    for uid, study in expected.items():
        assert found[uid]["patient_id"] == study["patient_id"]
        assert found[uid]["files"] == len(study["files"])
        assert found[uid]["modalities"] == [study["modality"]]
        assert found[uid]["bytes"] == sum((archive / f).stat().st_size for f in study["files"])
    assert any(f.endswith("RAW0002") for s in expected.values() for f in s["files"])


def test_catalog_ids_are_kept_and_a_nightly_run_parses_no_header(
    repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    vault("backup", "-r", repo, archive)
    first = {s["study_instance_uid"]: s["catalog_id"] for s in _studies(vault, repo)}
    nightly = vault("backup", "-r", repo, archive, "--json").json()
    assert nightly["stats"]["bytes_read"] == 0
    rows = _studies(vault, repo)
    assert {s["study_instance_uid"]: s["catalog_id"] for s in rows} == first
    assert all(len(s["snapshots"]) == 2 for s in rows)


def test_corrupt_dicom_is_listed_unparseable_and_still_restored(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    broken = archive / "imaging" / "broken.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xffgarbage")
    backed = vault("backup", "-r", repo, archive)
    assert backed.code == 0
    assert "garbage" not in backed.err + backed.out  # header values are never printed
    assert str(broken) in backed.err and "in no study" in backed.err
    r = repo.open(PASSWORD)
    catalog = r.load_catalog(r.snapshots()[-1])
    assert catalog is not None and str(broken) in catalog.unparseable
    out = tmp_path / "out"
    assert vault("restore", "latest", "-r", repo, "--target", out, "--include", broken).code == 0
    assert (out / broken.relative_to("/")).read_bytes() == broken.read_bytes()


def test_dicomdir_file_set_is_restored_with_its_study(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    staging = tmp_path / "staging"
    uid = generate_uid()
    fileset = FileSet()
    for i in range(3):
        fileset.add(_ct_slice(staging / f"s{i}.dcm", uid, "DEMO-0042", i + 1))
    share = tmp_path / "share"
    fileset.write(share / "cd")
    assert (share / "cd" / "DICOMDIR").exists()
    assert vault("backup", "-r", repo, share).code == 0
    (study,) = _studies(vault, repo)
    assert study["study_instance_uid"] == uid and study["files"] == 3  # the DICOMDIR is no study
    out = tmp_path / "out"
    assert vault("restore", "latest", "-r", repo, "--study", uid, "--target", out).code == 0
    restored = out / share.relative_to("/") / "cd"
    assert _files_under(restored) == _files_under(share / "cd")
    assert len(pydicom.dcmread(restored / "DICOMDIR").DirectoryRecordSequence) >= 4


@pytest.mark.parametrize("how", ["uid", "catalog-id", "patient", "patient-since"])
def test_restore_one_study_gives_exactly_its_files(
    tmp_path: Path,
    repo: RepoHandle,
    vault: RunCli,
    archive: Path,
    manifest: dict[str, Any],
    how: str,
) -> None:
    vault("backup", "-r", repo, archive)
    rows = {s["study_instance_uid"]: s for s in _studies(vault, repo)}
    target = next(s for s in manifest["studies"] if s["kind"] == "cbct-series")
    patient = target["patient_id"]
    args = {
        "uid": ["--study", target["study_uid"]],
        "catalog-id": ["--study", rows[target["study_uid"]]["catalog_id"]],
        "patient": ["--patient", patient],
        "patient-since": ["--patient", patient, "--since", "1900-01-01"],
    }[how]
    wanted = [s for s in manifest["studies"] if s["kind"] != "photo"]
    wanted = (
        [target]
        if how in ("uid", "catalog-id")
        else [s for s in wanted if s["patient_id"] == patient]
    )
    out = tmp_path / "out"
    result = vault("restore", "latest", "-r", repo, "--target", out, "--json", *args)
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["verified_files"] == doc["files"]
    restored = _files_under(out / archive.relative_to("/"))
    expected = {f: (archive / f).read_bytes() for s in wanted for f in s["files"]}
    assert restored == expected


def test_restore_of_a_study_missing_from_the_snapshot_names_the_snapshots_that_hold_it(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, archive: Path, manifest: dict[str, Any]
) -> None:
    first = vault("backup", "-r", repo, archive, "--json").json()["snapshot_id"]
    gone = next(s for s in manifest["studies"] if s["kind"] == "pano")
    for f in gone["files"]:
        (archive / f).unlink()
    vault("backup", "-r", repo, archive)
    result = vault(
        "restore", "latest", "-r", repo, "--study", gone["study_uid"], "--target", tmp_path / "o"
    )
    assert result.code == 2
    assert first[:8] in result.err and "not in snapshot" in result.err


def test_studies_filters(
    repo: RepoHandle, vault: RunCli, archive: Path, manifest: dict[str, Any]
) -> None:
    vault("backup", "-r", repo, archive)
    dicom = [s for s in manifest["studies"] if s["kind"] != "photo"]
    patient = dicom[0]["patient_id"]
    by_patient = _studies(vault, repo, "--patient", patient)
    assert {s["study_instance_uid"] for s in by_patient} == {
        s["study_uid"] for s in dicom if s["patient_id"] == patient
    }
    name = dicom[0]["patient_name"].split("^")[-1].lower()
    assert {s["patient_id"] for s in _studies(vault, repo, "--name", name)} == {patient}
    assert {s["modalities"][0] for s in _studies(vault, repo, "--modality", "ct")} == {"CT"}
    dates = sorted(s["study_date"] for s in dicom)
    later = _studies(vault, repo, "--since", dates[-1])
    assert {s["study_date"] for s in later} == {dates[-1]}
    earlier = _studies(vault, repo, "--until", dates[0])
    assert {s["study_date"] for s in earlier} == {dates[0]}
    assert vault("studies", "-r", repo, "--since", "yesterday").code == 2


def test_restoring_one_study_downloads_little_more_than_that_study(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    share = tmp_path / "share"
    uids = [generate_uid() for _ in range(12)]
    for n, uid in enumerate(uids):
        for i in range(24):
            _ct_slice(share / f"P{n:03}" / f"IMG{i:04}.dcm", uid, f"DEMO-{n:04}", i, size=256)
    assert vault("backup", "-r", repo, share).code == 0
    target = uids[5]
    r = repo.open(PASSWORD)
    r.load_index()
    catalog = r.load_catalog(r.snapshots()[-1])
    assert catalog is not None
    study_files = set(catalog.studies[target].files)
    # The study's stored size: the sealed length of every distinct chunk of its files.
    from vault.jobs.restore.entries import walk

    chunks: set[str] = set()
    for item in walk(r, r.snapshots()[-1], []):
        if item.path.decode() in study_files:
            chunks.update(item.node.chunks)
    stored = sum(r.index[bytes.fromhex(c)].entry.length for c in chunks)
    assert all(r.index[bytes.fromhex(c)].entry.type == BlobType.DATA for c in chunks)
    doc = vault(
        "restore", "latest", "-r", repo, "--study", target, "--target", tmp_path / "out", "--json"
    ).json()
    assert doc["files"] == 24
    assert doc["bytes_downloaded"] <= 1.5 * stored
    total = sum(p.stat().st_size for p in share.rglob("*") if p.is_file())
    assert doc["bytes_downloaded"] < total / 6
    digest = hashlib.sha256((share / "P005" / "IMG0003.dcm").read_bytes()).hexdigest()
    restored = tmp_path / "out" / share.relative_to("/") / "P005" / "IMG0003.dcm"
    assert hashlib.sha256(restored.read_bytes()).hexdigest() == digest


def test_a_header_longer_than_one_read_block_is_still_catalogued(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    ds = Dataset()
    ds.add_new(0x00090010, "LO", "VENDOR")  # a private block of 3 MiB before the patient
    ds.add_new(0x00091000, "OB", bytes(3 * 1024 * 1024))
    ds.PatientName = "LONG^HEADER"
    ds.PatientID = "LH-1"
    ds.Modality = "CT"
    ds.StudyInstanceUID = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    source = tmp_path / "src"
    source.mkdir()
    ds.save_as(source / "long.dcm", enforce_file_format=True)
    vault("backup", "-r", repo, source)
    studies = vault("studies", "-r", repo, "--json").json()
    assert [s["study_instance_uid"] for s in studies] == [str(ds.StudyInstanceUID)]


def test_a_dicomdir_naming_a_file_in_no_study_is_left_out_of_a_study_restore(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    """Every study the DICOMDIR lists is restored, but one file it names is unreadable (in no
    study): restored beside the study it would name a missing file, so it is left out."""
    staging = tmp_path / "staging"
    uid = generate_uid()
    fileset = FileSet()
    for i in range(3):
        fileset.add(_ct_slice(staging / f"s{i}.dcm", uid, "DEMO-0043", i + 1))
    share = tmp_path / "share"
    fileset.write(share / "cd")
    images = sorted(p for p in (share / "cd").rglob("*") if p.is_file() and p.name != "DICOMDIR")
    images[0].write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 64)  # still named by the DICOMDIR
    assert vault("backup", "-r", repo, share).code == 0
    out = tmp_path / "out"
    done = vault("restore", "latest", "-r", repo, "--study", uid, "--target", out)
    assert done.code == 0, done.err
    assert "left out 1 DICOMDIR" in done.err
    assert not (out / share.relative_to("/") / "cd" / "DICOMDIR").exists()


def test_the_backup_says_why_a_dicom_file_is_in_no_study(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    share = tmp_path / "share"
    ds = _ct_slice(share / "no-uid.dcm", generate_uid(), "DEMO-0044", 1)
    del ds.StudyInstanceUID
    ds.save_as(share / "no-uid.dcm", enforce_file_format=True)
    (share / "cut.dcm").write_bytes((share / "no-uid.dcm").read_bytes()[:150])
    backed = vault("backup", "-r", repo, share, "--json")
    assert backed.code == 0
    reasons = {Path(u["path"]).name: u["reason"] for u in backed.json()["unparseable_dicom"]}
    assert reasons["no-uid.dcm"] == "it has no StudyInstanceUID"
    assert "no-uid.dcm" in backed.err and "it has no StudyInstanceUID" in backed.err
    assert "cut.dcm" in reasons and reasons["cut.dcm"] != "it has no StudyInstanceUID"
    summary = vault("backup", "-r", repo, share)  # the text summary counts them too
    assert "2 DICOM file(s) in no study" in summary.out


def test_a_catalog_equal_to_its_parents_is_stored_as_the_parents_bytes() -> None:
    from vault.dicom.catalog import Catalog, CatalogBuilder
    from vault.dicom.header import FileHeader, Unparseable

    first = CatalogBuilder(None)
    for i in range(3):
        first.add_read(f"/a/s{i}.dcm", FileHeader(study_uid="1.2.3", patient_id="P1"), 100)
    first.add_read("/a/bad.dcm", Unparseable("no header"), 10)
    parent = Catalog.from_bytes(first.serialized(first.build()))

    def nightly(paths: list[str], changed: str = "") -> tuple[bytes, Catalog]:
        builder = CatalogBuilder(parent)
        for path in paths:
            builder.add_unchanged(path, 100)
        if changed:  # a header edit: the file was read again
            builder.add_read(changed, FileHeader(study_uid="1.2.3", patient_id="P2"), 100)
        built = builder.build()
        data = builder.serialized(built)
        assert Catalog.from_bytes(data) == built
        return data, built

    everything = [f"/a/s{i}.dcm" for i in range(3)] + ["/a/bad.dcm"]
    same, _ = nightly(everything)
    assert same is parent.loaded_from  # not serialized again
    # A file gone, or one read again with a new header, is a different catalog.
    fewer, built = nightly(everything[1:])
    assert fewer != parent.loaded_from and built.studies["1.2.3"].bytes == 200
    edited, built = nightly(everything[:2] + everything[3:], changed="/a/s2.dcm")
    assert edited != parent.loaded_from
    assert built.file_headers["/a/s2.dcm"].patient_id == "P2"
