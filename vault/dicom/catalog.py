"""The DICOM study catalog of a snapshot: which studies the backup holds, from headers only.

A file is DICOM when its content says so (128-byte preamble then "DICM"), whatever its name.
Only the header is parsed (pydicom, stopping before pixel data, from the first block the backup
reads anyway), so cataloguing costs no extra I/O. A DICOMDIR joins every study it references,
so restoring a study from a file-set keeps the file-set valid. Files that look like DICOM but do
not parse are still backed up byte for byte and listed as unparseable.

Every study gets a random catalog id the first time it is seen and keeps it in later snapshots;
drill records and audit events name studies only by that id. The catalog is sealed (it holds
patient names and IDs) and stored per snapshot as `catalog/<snapshot id>`. This module is the
home of pydicom for reading; it does no storage I/O.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import secrets
import warnings
from dataclasses import asdict, dataclass, field, fields
from types import ModuleType
from typing import Any

from vault.dicom.scan import scan


@functools.cache
def _pydicom() -> ModuleType:
    """pydicom, imported on first use: most headers never need it (vault.dicom.scan), and its
    import (with numpy when installed) costs more than a nightly backup's whole walk."""
    import pydicom
    import pydicom.config

    # Reading a header must never print: pydicom's validation warnings quote element values,
    # and those can be patient identifiers. Values are taken as they are; nothing validates.
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    return pydicom


DICM_OFFSET = 128
CATALOG_ID_BYTES = 8  # 16 hex characters: unique per repository, meaningless outside it

_STUDY_TAGS = [
    "StudyInstanceUID",
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "StudyDate",
    "Modality",
    "AccessionNumber",
    "StudyDescription",
]


def looks_like_dicom(head: bytes) -> bool:
    return len(head) >= DICM_OFFSET + 4 and head[DICM_OFFSET : DICM_OFFSET + 4] == b"DICM"


@dataclass(frozen=True)
class FileHeader:
    """What one DICOM file says about its study (or, for a DICOMDIR, the studies it lists)."""

    study_uid: str = ""
    patient_id: str = ""
    patient_name: str = ""
    birth_date: str = ""
    study_date: str = ""
    modality: str = ""
    accession: str = ""
    description: str = ""
    dicomdir_studies: tuple[str, ...] = ()


def read_header(head: bytes) -> FileHeader | None:
    """Parse the header in `head` (the first bytes of a file). None when not DICOM; raises
    ValueError when it claims to be DICOM but cannot be parsed."""
    if not looks_like_dicom(head):
        return None
    fast = scan(head)
    if fast is not None:
        return FileHeader(
            study_uid=fast["study_uid"],
            patient_id=fast.get("patient_id", ""),
            patient_name=fast.get("patient_name", ""),
            birth_date=fast.get("birth_date", ""),
            study_date=fast.get("study_date", ""),
            modality=fast.get("modality", ""),
            accession=fast.get("accession", ""),
            description=fast.get("description", ""),
        )
    return parse_with_pydicom(head)


def parse_with_pydicom(head: bytes) -> FileHeader:
    """The general path (and the fast path's oracle in tests): any header pydicom reads."""
    pydicom = _pydicom()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(head), stop_before_pixels=True)
    except (
        pydicom.errors.InvalidDicomError,
        EOFError,
        OSError,
        ValueError,
        KeyError,
        TypeError,
    ) as exc:
        raise ValueError(f"unparseable DICOM header ({exc.__class__.__name__})") from None
    if "DirectoryRecordSequence" in ds:
        uids = sorted(
            {
                str(rec.get("StudyInstanceUID", ""))
                for rec in ds.DirectoryRecordSequence
                if rec.get("DirectoryRecordType") == "STUDY" and rec.get("StudyInstanceUID")
            }
        )
        return FileHeader(dicomdir_studies=tuple(uids))
    uid = str(ds.get("StudyInstanceUID", "") or "")
    if not uid:
        raise ValueError("DICOM file without a StudyInstanceUID")
    return FileHeader(
        study_uid=uid,
        patient_id=str(ds.get("PatientID", "") or ""),
        patient_name=str(ds.get("PatientName", "") or ""),
        birth_date=str(ds.get("PatientBirthDate", "") or ""),
        study_date=str(ds.get("StudyDate", "") or ""),
        modality=str(ds.get("Modality", "") or ""),
        accession=str(ds.get("AccessionNumber", "") or ""),
        description=str(ds.get("StudyDescription", "") or ""),
    )


@dataclass
class Study:
    catalog_id: str
    study_uid: str
    patient_id: str = ""
    patient_name: str = ""
    birth_date: str = ""
    study_date: str = ""
    modalities: list[str] = field(default_factory=list)
    accession: str = ""
    description: str = ""
    files: list[str] = field(default_factory=list)  # snapshot paths
    bytes: int = 0


@dataclass
class Catalog:
    studies: dict[str, Study] = field(default_factory=dict)  # by StudyInstanceUID
    # Per file, so the next backup can reuse an unchanged file's entry without reading it.
    file_headers: dict[str, FileHeader] = field(default_factory=dict)
    unparseable: list[str] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        doc = {
            "version": 1,
            "studies": [
                asdict(s) for s in sorted(self.studies.values(), key=lambda s: s.catalog_id)
            ],
            "files": {path: _header_json(h) for path, h in sorted(self.file_headers.items())},
            "unparseable": sorted(self.unparseable),
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Catalog:
        doc = json.loads(data)
        if doc.get("version") != 1:
            raise ValueError(f"unsupported catalog version {doc.get('version')!r}")
        studies = {s["study_uid"]: Study(**s) for s in doc["studies"]}
        headers = {
            path: FileHeader(**{**h, "dicomdir_studies": tuple(h.get("dicomdir_studies", ()))})
            for path, h in doc["files"].items()
        }
        return cls(studies, headers, list(doc.get("unparseable", ())))

    def find(self, ref: str) -> Study | None:
        """A study by StudyInstanceUID or catalog id."""
        if ref in self.studies:
            return self.studies[ref]
        return next((s for s in self.studies.values() if s.catalog_id == ref.lower()), None)


_HEADER_TEXT_FIELDS = [f.name for f in fields(FileHeader) if f.name != "dicomdir_studies"]


def _header_json(header: FileHeader) -> dict[str, Any]:
    # Plain attribute reads: asdict's deep copies cost a nightly backup ~0.1 s per 10,000 files.
    doc: dict[str, Any] = {}
    for name in _HEADER_TEXT_FIELDS:
        value = getattr(header, name)
        if value:
            doc[name] = value
    if header.dicomdir_studies:
        doc["dicomdir_studies"] = list(header.dicomdir_studies)
    return doc


class CatalogBuilder:
    """Collects file headers during a backup and builds the snapshot's catalog."""

    def __init__(self, parent: Catalog | None) -> None:
        self.parent = parent
        self._files: dict[str, tuple[FileHeader, int]] = {}
        self._unparseable: list[str] = []

    def add_read(self, path: str, head: bytes, size: int) -> None:
        """A file the backup read: parse its first bytes."""
        try:
            header = read_header(head)
        except ValueError:
            self._unparseable.append(path)
            return
        if header is not None:
            self._files[path] = (header, size)

    def add_unchanged(self, path: str, size: int) -> None:
        """A file reused from the parent snapshot: reuse its header too (nothing is read)."""
        if self.parent is None:
            return
        header = self.parent.file_headers.get(path)
        if header is not None:
            self._files[path] = (header, size)
        elif path in self.parent.unparseable:
            self._unparseable.append(path)

    def build(self) -> Catalog:
        known = {
            uid: s.catalog_id for uid, s in (self.parent.studies if self.parent else {}).items()
        }
        catalog = Catalog(unparseable=sorted(self._unparseable))
        dicomdirs: list[tuple[str, FileHeader, int]] = []
        for path, (header, size) in sorted(self._files.items()):
            catalog.file_headers[path] = header
            if header.dicomdir_studies:
                dicomdirs.append((path, header, size))
                continue
            study = catalog.studies.get(header.study_uid)
            if study is None:
                study = catalog.studies[header.study_uid] = Study(
                    catalog_id=known.get(header.study_uid) or secrets.token_hex(CATALOG_ID_BYTES),
                    study_uid=header.study_uid,
                    patient_id=header.patient_id,
                    patient_name=header.patient_name,
                    birth_date=header.birth_date,
                    study_date=header.study_date,
                    accession=header.accession,
                    description=header.description,
                )
            if header.modality and header.modality not in study.modalities:
                study.modalities.append(header.modality)
            study.files.append(path)
            study.bytes += size
        for path, header, size in dicomdirs:
            for uid in header.dicomdir_studies:
                study = catalog.studies.get(uid)
                if study is not None:
                    study.files.append(path)
                    study.bytes += size
        return catalog
