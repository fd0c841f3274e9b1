"""Real DICOM files vault's developers did not write: pydicom's bundled test files (the ones in
its wheel) and the pydicom-data corpus (big and little endian, implicit VR, deflated, JPEG, JPEG
2000, JPEG-LS, RLE, DICOMDIR file-sets, files without preamble or meta group, odd character
sets, SR and RT objects). Every file's catalog entry must be what pydicom reads, every study
restores exact; and cut or corrupted copies never fail a backup nor lose a byte."""

from __future__ import annotations

import io
import logging
import random
import shutil
import struct
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, DeflatedExplicitVRLittleEndian, generate_uid

from tests.conftest import PASSWORD, RunCli
from tests.corpus import corpus_files
from tests.repos import RepoHandle
from vault.dicom import header
from vault.dicom.header import FileHeader, normalise_date, normalise_name

logging.getLogger("pydicom").setLevel(logging.CRITICAL)


CORPUS = corpus_files()


def _pydicom_view(path: Path | bytes) -> dict[str, Any] | None:
    """What pydicom itself reads (the oracle): None when it reads no DICOM data set."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's value warnings, on values read below too
        return _read_view(io.BytesIO(path) if isinstance(path, bytes) else path)


def _read_view(source: Any) -> dict[str, Any] | None:
    try:
        ds = pydicom.dcmread(source, force=True, stop_before_pixels=True)
    except Exception:
        return None
    if "DirectoryRecordSequence" in ds:
        uids = {
            str(r.StudyInstanceUID)
            for r in ds.DirectoryRecordSequence
            if r.get("DirectoryRecordType") == "STUDY" and r.get("StudyInstanceUID")
        }
        return {"dicomdir": sorted(uids)}
    uid = str(ds.get("StudyInstanceUID", "") or "").strip("\0 ")
    if not uid:
        return {"uid": ""}
    return {
        "uid": uid,
        "patient_id": str(ds.get("PatientID", "") or ""),
        "patient_name": normalise_name(str(ds.get("PatientName", "") or "")),
        "study_date": normalise_date(str(ds.get("StudyDate", "") or "")),
        "modality": str(ds.get("Modality", "") or ""),
    }


def test_the_corpus_is_there() -> None:
    """The suite runs on a real corpus, not on nothing (pydicom-data is a test dependency)."""
    assert len(CORPUS) >= 150
    assert sum(1 for p in CORPUS if (_pydicom_view(p) or {}).get("uid")) >= 100


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_every_file_is_catalogued_as_pydicom_reads_it(path: Path) -> None:
    want = _pydicom_view(path)
    got = header.read_header(path.read_bytes())
    if want is None or (want.get("uid") == "" and "dicomdir" not in want):
        # Not DICOM, or DICOM in no study: never a study, never an exception.
        assert got is None or not isinstance(got, FileHeader) or got.is_dicomdir
        return
    assert isinstance(got, FileHeader), got
    if "dicomdir" in want:
        assert got.is_dicomdir and sorted(got.dicomdir_studies) == want["dicomdir"]
        return
    assert (got.study_uid, got.patient_id, got.patient_name, got.study_date, got.modality) == (
        want["uid"],
        want["patient_id"],
        want["patient_name"],
        want["study_date"],
        want["modality"],
    )


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus copied under one root (file names made unique by their source folder)."""
    root = tmp_path_factory.mktemp("corpus") / "pacs-export"
    for path in CORPUS:
        parent = path.parent.name
        target = root / parent / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return root


def test_the_corpus_backs_up_and_every_study_restores_exact(
    corpus_dir: Path, repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    backed = vault("backup", "-r", repo, corpus_dir, "--json")
    assert backed.code == 0, backed.err
    opened = repo.open(PASSWORD)
    snapshot = opened.snapshots()[-1]
    catalog = opened.load_catalog(snapshot)
    assert catalog is not None
    # Counts: every file pydicom places in a study is in that study, and nowhere else.
    expected: Counter[str] = Counter()
    for path in corpus_dir.rglob("*"):
        view = _pydicom_view(path) if path.is_file() else None
        if view and view.get("uid"):
            expected[view["uid"]] += 1
    assert {uid: len(s.files) for uid, s in catalog.studies.items()} == dict(expected)
    studies = vault("studies", "-r", repo, "--json").json()
    assert len(studies) == len(expected)
    for study in studies:
        out = tmp_path / f"one-{study['catalog_id']}"
        restored = vault(
            "restore", "latest", "-r", repo, "--study", study["catalog_id"], "--target", out
        )
        assert restored.code == 0, restored.err
        files = [p for p in out.rglob("*") if p.is_file()]
        assert files and len(files) >= study["files"]
        for path in files:
            original = Path("/") / path.relative_to(out)
            assert path.read_bytes() == original.read_bytes(), original


def _deflated(path: Path, pixel_bytes: int) -> str:
    """A valid Deflated Explicit VR Little Endian CT image whose deflated size is about
    `pixel_bytes` (random pixels do not compress): larger than any fixed header window."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "DEFLATE^BIG"
    ds.PatientID = "DFL-1"
    ds.StudyDate = "1994.11.05"
    ds.Modality = "CT"
    side = int((pixel_bytes // 2) ** 0.5)
    ds.Rows = ds.Columns = side
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = random.Random(7).randbytes(side * side * 2)
    ds.save_as(path, enforce_file_format=True)
    return str(ds.StudyInstanceUID)


def test_a_deflated_file_larger_than_any_header_window_is_catalogued(
    repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    uid = _deflated(source / "big-deflated.dcm", 9 * 1024 * 1024)
    assert (source / "big-deflated.dcm").stat().st_size > 8 * 1024 * 1024
    backed = vault("backup", "-r", repo, source, "--json")
    assert backed.code == 0, backed.err
    assert backed.json()["unparseable_dicom"] == []
    (study,) = vault("studies", "-r", repo, "--json").json()
    assert study["study_instance_uid"] == uid and study["study_date"] == "19941105"
    # The old dotted date compares as a date.
    found = vault("studies", "-r", repo, "--since", "1994-11-01", "--until", "1994-11-30", "--json")
    assert len(found.json()) == 1
    # DICOM ranges, in any of the date forms.
    for ranged, hits in (("1994.11.01-1994.11.30", 1), ("-19941104", 0), ("19941105-", 1)):
        assert len(vault("studies", "-r", repo, "--date", ranged, "--json").json()) == hits
    bad = vault("studies", "-r", repo, "--date", "19941130-19941101")
    assert bad.code == 2 and "ends before it starts" in bad.err


def _dicomdir(path: Path, studies: int, records_per_study: int) -> list[str]:
    """A DICOMDIR far larger than 4 MiB, its records in one long sequence."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds = Dataset()
    ds.file_meta = meta
    ds.FileSetID = "CBCT CD"
    uids = [generate_uid() for _ in range(studies)]
    records = []
    for uid in uids:
        study = Dataset()
        study.DirectoryRecordType = "STUDY"
        study.StudyInstanceUID = uid
        records.append(study)
        for n in range(records_per_study):
            image = Dataset()
            image.DirectoryRecordType = "IMAGE"
            image.ReferencedFileID = ["DICOM", f"I{n:07d}"]
            image.ReferencedSOPInstanceUIDInFile = generate_uid()
            image.ImageComments = "x" * 200  # long records, as vendors write them
            records.append(image)
    ds.DirectoryRecordSequence = records
    ds.save_as(path, enforce_file_format=True)
    return uids


def test_a_large_dicomdir_is_a_file_set_not_a_study_and_never_drops_out(
    repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    source = tmp_path / "cd"
    source.mkdir()
    uids = _dicomdir(source / "DICOMDIR", studies=3, records_per_study=6000)
    assert (source / "DICOMDIR").stat().st_size > 5 * 1024 * 1024
    backed = vault("backup", "-r", repo, source, "--json")
    assert backed.code == 0, backed.err
    assert backed.json()["unparseable_dicom"] == []
    opened = repo.open(PASSWORD)
    catalog = opened.load_catalog(opened.snapshots()[-1])
    assert catalog is not None and catalog.studies == {}  # a DICOMDIR alone is no study
    entry = catalog.file_headers[str(source / "DICOMDIR")]
    assert entry.is_dicomdir and sorted(entry.dicomdir_studies) == sorted(uids)


def test_an_empty_dicomdir_is_no_study(repo: RepoHandle, vault: RunCli, tmp_path: Path) -> None:
    source = tmp_path / "cd"
    source.mkdir()
    _dicomdir(source / "DICOMDIR", studies=0, records_per_study=0)
    assert vault("backup", "-r", repo, source).code == 0
    assert vault("studies", "-r", repo, "--json").json() == []


# -- cut and corrupted copies of real files -------------------------------------------------

DICOM_FILES = [p for p in CORPUS if p.read_bytes()[128:132] == b"DICM"]


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A real DICOM file cut at a random point, with random bytes flipped or inserted."""
    data = bytearray(draw(st.sampled_from(DICOM_FILES)).read_bytes())
    cut = draw(st.integers(132, len(data)))
    del data[cut:]
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if data and draw(st.booleans()):
            data[at] ^= draw(st.integers(1, 255))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged())
def test_a_damaged_header_never_escapes_the_catalog(data: bytes) -> None:
    found = header.read_header(data)
    assert found is None or isinstance(found, FileHeader | header.Unparseable)
    if isinstance(found, header.Unparseable):
        assert not any(ch.isdigit() for ch in found.reason.replace("64 MiB", ""))  # no values


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(files=st.lists(damaged(), min_size=10, max_size=20))
def test_a_backup_of_damaged_dicom_always_completes_and_restores_byte_identical(
    files: list[bytes], repo: RepoHandle, vault: RunCli, tmp_path_factory: pytest.TempPathFactory
) -> None:
    source = tmp_path_factory.mktemp("damaged")
    for n, data in enumerate(files):
        (source / f"IMG{n:04d}").write_bytes(data)
    backed = vault("backup", "-r", repo, source, "--json")
    assert backed.code == 0, backed.err
    out = tmp_path_factory.mktemp("out")
    snapshot = backed.json()["snapshot_id"]
    assert vault("restore", snapshot, "-r", repo, "--target", out, "--verify").code == 0
    for n, data in enumerate(files):
        assert (out / source.relative_to("/") / f"IMG{n:04d}").read_bytes() == data


def test_names_in_any_character_set_are_found_with_or_without_carets(
    repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    source = tmp_path / "charsets"
    source.mkdir()
    for path in CORPUS:
        if path.parent.name == "charset_files":
            shutil.copyfile(path, source / path.name)
    assert vault("backup", "-r", repo, source).code == 0
    studies = vault("studies", "-r", repo, "--json").json()
    names = {s["patient_name"] for s in studies}
    assert "Wang^XiaoDong=王^小东" in names and not any(n.endswith("=") for n in names)
    for query, at_least in (("WANG^XIAODONG", 2), ("wang xiaodong", 2), ("山田", 2), ("jérôme", 1)):
        found = vault("studies", "-r", repo, "--name", query, "--json").json()
        assert len(found) >= at_least, (query, found)


# -- hostile shapes the review found -------------------------------------------------------


def _meta(syntax: str, *, padding: int = 0) -> bytes:
    """A preamble, DICM and a file meta group naming `syntax`, with an optional large
    private-information element (a meta group larger than any fixed window)."""

    def element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
        if len(value) % 2:
            value += b"\0"
        if vr in (b"OB", b"UN"):
            return struct.pack("<HH2sHI", group, elem, vr, 0, len(value)) + value
        return struct.pack("<HH2sH", group, elem, vr, len(value)) + value

    body = element(2, 0x0001, b"OB", b"\0\1")
    body += element(2, 0x0002, b"UI", CTImageStorage.encode())
    body += element(2, 0x0003, b"UI", b"1.2.826.0.1.3680043.8.498.1")
    body += element(2, 0x0010, b"UI", syntax.encode())
    if padding:
        body += element(2, 0x0102, b"OB", b"p" * padding)
    return b"\0" * 128 + b"DICM" + element(2, 0x0000, b"UL", struct.pack("<I", len(body))) + body


def test_a_deflate_bomb_is_inflated_only_as_far_as_a_header_needs() -> None:
    import tracemalloc
    import zlib

    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = compressor.compress(b"\0" * (512 * 1024 * 1024)) + compressor.flush()
    for padding in (0, 100_000):  # and behind a meta group larger than 64 KiB
        data = _meta(DeflatedExplicitVRLittleEndian, padding=padding) + bomb
        tracemalloc.start()
        found = header.read_header(data)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert isinstance(found, header.Unparseable), found
        assert peak < 200 * 1024 * 1024, peak  # bounded, never the 512 MiB it inflates to


def test_a_deflated_file_without_preamble_is_catalogued(tmp_path: Path) -> None:
    path = tmp_path / "deflated.dcm"
    uid = _deflated(path, 5 * 1024 * 1024)
    found = header.read_header(path.read_bytes()[132:])  # the same file, meta group first
    assert isinstance(found, FileHeader) and found.study_uid == uid


def test_zero_bytes_after_the_meta_group_are_corrupt_not_a_long_parse() -> None:
    found = header.read_header(_meta("1.2.840.10008.1.2.1") + b"\0" * (16 * 1024 * 1024))
    assert isinstance(found, header.Unparseable) and "zero bytes" in found.reason


def test_a_file_cut_inside_its_study_uid_is_not_a_study(tmp_path: Path) -> None:
    path = tmp_path / "cut.dcm"
    _deflated(path, 1024)  # any valid file; rewritten below as explicit VR little endian
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    data = out.getvalue()
    at = data.index(str(ds.StudyInstanceUID).encode())
    for cut in range(at + 3, at + len(str(ds.StudyInstanceUID)) - 1, 7):
        found = header.read_header(data[:cut])
        assert not isinstance(found, FileHeader), (cut, found)


def test_a_first_read_shorter_than_the_preamble_still_finds_dicom(tmp_path: Path) -> None:
    path = tmp_path / "small-reads.dcm"
    uid = _deflated(path, 1024)
    data = path.read_bytes()
    collector = header.HeaderCollector()
    for start in range(0, len(data), 50):  # 50-byte reads, as a slow network mount gives
        collector.feed(data[start : start + 50])
    found = collector.result()
    assert isinstance(found, FileHeader) and found.study_uid == uid
