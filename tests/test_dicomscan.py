"""The catalog's fast header scanner answers exactly what pydicom does, or leaves it to pydicom.

Headers are written by pydicom with hypothesis-chosen transfer syntaxes, character sets, values
(including padding, non-ASCII text, multi-valued and empty values), missing elements and a
sequence before the study elements. Whenever the scanner answers, the answer must equal the
pydicom path's; for plain headers it must answer (otherwise it would be no fast path at all).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from vault.dicom import header
from vault.dicom.scan import scan

# pydicom warns when hypothesis text does not fit a character set; that is the point.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CHARSETS = {None: "ascii", "ISO_IR 100": "latin_1", "ISO_IR 192": "utf_8", "ISO_IR 144": None}
TEXT = st.text(alphabet=st.sampled_from(list("ABCDEZ^ 019-.\\äöüÅßéЖ中")), min_size=0, max_size=24)


def _write(ds: Dataset, syntax: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds.file_meta = meta
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@st.composite
def headers(draw: st.DrawFn) -> bytes:
    ds = Dataset()
    charset = draw(st.sampled_from(sorted(CHARSETS, key=str)))
    if charset:
        ds.SpecificCharacterSet = charset
    if draw(st.booleans()):
        item = Dataset()
        item.ReferencedSOPInstanceUID = generate_uid()
        ds.ReferencedStudySequence = Sequence([item])  # (0008,1110): before the study tags
    encoding = CHARSETS[charset] or "latin_1"
    for keyword in ("PatientName", "PatientID", "StudyDescription", "AccessionNumber"):
        if draw(st.booleans()):
            value = draw(TEXT)
            try:
                value.encode(encoding)
            except UnicodeEncodeError:
                value = value.encode(encoding, "ignore").decode(encoding)
            setattr(ds, keyword, value)
    if draw(st.booleans()):
        ds.StudyDate = draw(st.sampled_from(["20240301", "", "20240301 "]))
    if draw(st.booleans()):
        ds.PatientBirthDate = "19700101"
    ds.Modality = draw(st.sampled_from(["CT", "PX", "IO", "", "CT\\PX"]))
    if draw(st.integers(0, 9)):  # usually present
        ds.StudyInstanceUID = generate_uid()
    syntax = draw(st.sampled_from([ExplicitVRLittleEndian, ImplicitVRLittleEndian]))
    return _write(ds, syntax)


def _pydicom(head: bytes) -> header.FileHeader | None:
    found = header.parse_with_pydicom(head)
    return found if isinstance(found, header.FileHeader) else None


@settings(max_examples=300, deadline=None)
@given(headers())
def test_scan_agrees_with_pydicom_whenever_it_answers(head: bytes) -> None:
    fast = scan(head)
    if fast is not None:
        assert header.read_header(head) == (
            _pydicom(head) or header.Unparseable("it has no StudyInstanceUID")
        )
        assert fast["study_uid"] == _pydicom(head).study_uid  # type: ignore[union-attr]


def test_plain_headers_take_the_fast_path(archive: Path) -> None:
    answered = total = 0
    for path in archive.rglob("*"):
        head = path.read_bytes()[: 1 << 20] if path.is_file() else b""
        if not header.looks_like_dicom(head):
            continue
        total += 1
        fast = scan(head)
        if fast is not None:
            answered += 1
            assert header.read_header(head) == header.parse_with_pydicom(head)
    assert total > 10 and answered == total


def test_what_the_scanner_leaves_to_pydicom() -> None:
    ds = Dataset()
    ds.PatientName = "DEMO^ALICE"
    ds.StudyInstanceUID = generate_uid()
    ds.Modality = "CT"
    plain = _write(ds, ExplicitVRLittleEndian)
    assert scan(plain) == {
        "patient_name": "DEMO^ALICE",
        "study_uid": str(ds.StudyInstanceUID),
        "modality": "CT",
    }
    ds.SpecificCharacterSet = "ISO 2022 IR 87"  # Japanese escape sequences: pydicom's job
    assert scan(_write(ds, ExplicitVRLittleEndian)) is None
    del ds.SpecificCharacterSet
    del ds.StudyInstanceUID
    assert scan(_write(ds, ExplicitVRLittleEndian)) is None
    assert scan(plain[:200]) is None  # cut before StudyInstanceUID
