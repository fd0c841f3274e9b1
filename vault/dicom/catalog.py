"""The DICOM study catalog of a snapshot: which studies the backup holds, from headers only.

A file is DICOM when its content says so, whatever its name (vault.dicom.header reads it from
the blocks the backup reads anyway, so cataloguing costs no extra I/O). A DICOMDIR is a
file-set directory, not a study: each study it lists records it among its `file_sets`, and a
one-study restore leaves it out (it would list files that were not restored). Files marked DICOM
whose header does not parse are still backed up byte for byte and listed as unparseable, with
the reason; a catalog never fails a backup.

Every study gets a random catalog id the first time it is seen and keeps it in later snapshots;
drill records and audit events name studies only by that id. The catalog is sealed (it holds
patient names and IDs) and stored per snapshot as `catalog/<snapshot id>`. This module is the
home of pydicom for reading; it does no storage I/O.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from vault.dicom.header import FileHeader, Unparseable
from vault.errors import IntegrityError

CATALOG_ID_BYTES = 8  # 16 hex characters: unique per repository, meaningless outside it


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
    # DICOMDIRs that list this study. Not among `files`: a DICOMDIR lists other studies too,
    # and one restored beside a single study would name files that are not there (an invalid
    # file-set). Catalogs before 0.3 put them in `files`.
    file_sets: list[str] = field(default_factory=list)


@dataclass
class Catalog:
    studies: dict[str, Study] = field(default_factory=dict)  # by StudyInstanceUID
    # Per file, so the next backup can reuse an unchanged file's entry without reading it.
    file_headers: dict[str, FileHeader] = field(default_factory=dict)
    unparseable: list[str] = field(default_factory=list)
    # Why each unparseable file did not parse, in words that quote nothing from the file.
    unparseable_reasons: dict[str, str] = field(default_factory=dict)
    # The bytes this catalog was read from: a nightly backup whose catalog comes out equal to
    # its parent's stores these again instead of serializing 10,000 file headers anew.
    loaded_from: bytes = field(default=b"", compare=False, repr=False)

    def to_bytes(self) -> bytes:
        doc = {
            "version": 1,
            "studies": [
                asdict(s) for s in sorted(self.studies.values(), key=lambda s: s.catalog_id)
            ],
            "files": {path: _header_json(h) for path, h in sorted(self.file_headers.items())},
            "unparseable": sorted(self.unparseable),
            "unparseable_reasons": dict(sorted(self.unparseable_reasons.items())),
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Catalog:
        doc = json.loads(data)
        if doc.get("version") != 1:
            raise ValueError(f"unsupported catalog version {doc.get('version')!r}")
        studies = {s["study_uid"]: _study(s) for s in doc["studies"]}
        headers = {
            path: FileHeader(**{**h, "dicomdir_studies": tuple(h.get("dicomdir_studies", ()))})
            for path, h in doc["files"].items()
        }
        return cls(
            studies,
            headers,
            list(doc.get("unparseable", ())),
            dict(doc.get("unparseable_reasons", {})),
            loaded_from=data,
        )

    def find(self, ref: str) -> Study | None:
        """A study by StudyInstanceUID or catalog id."""
        if ref in self.studies:
            return self.studies[ref]
        return next((s for s in self.studies.values() if s.catalog_id == ref.lower()), None)


def _study(doc: dict[str, Any]) -> Study:
    """A study as stored, its field types checked: what a restore orders or a page prints is
    never a number where a name should be (the catalog is authenticated, but a reader should
    not trust a writer's bugs either)."""
    study = Study(**doc)
    for f in fields(Study):
        value = getattr(study, f.name)
        if f.name == "bytes":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(value, list):
            ok = all(isinstance(v, str) for v in value)
        else:
            ok = isinstance(value, str)
        if not ok:
            raise ValueError(f"study field {f.name} has the wrong type")
    return study


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
        self._unparseable: dict[str, str] = {}

    def add_read(self, path: str, header: FileHeader | Unparseable | None, size: int) -> None:
        """A file the backup read, with what vault.dicom.header made of it."""
        if isinstance(header, Unparseable):
            self._unparseable[path] = header.reason
        elif header is not None:
            self._files[path] = (header, size)

    def add_unchanged(self, path: str, size: int) -> None:
        """A file reused from the parent snapshot: reuse its header too (nothing is read)."""
        if self.parent is None:
            return
        header = self.parent.file_headers.get(path)
        if header is not None:
            self._files[path] = (header, size)
        elif path in self.parent.unparseable:
            self._unparseable[path] = self.parent.unparseable_reasons.get(
                path, "its header cannot be parsed"
            )

    def build(self) -> Catalog:
        known = {
            uid: s.catalog_id for uid, s in (self.parent.studies if self.parent else {}).items()
        }
        catalog = Catalog(
            unparseable=sorted(self._unparseable), unparseable_reasons=dict(self._unparseable)
        )
        dicomdirs: list[tuple[str, FileHeader, int]] = []
        for path, (header, size) in sorted(self._files.items()):
            catalog.file_headers[path] = header
            if header.is_dicomdir or header.dicomdir_studies:
                dicomdirs.append((path, header, size))  # a file-set directory, not a study
                continue
            if not header.study_uid:
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
        for path, header, _size in dicomdirs:
            for uid in header.dicomdir_studies:
                study = catalog.studies.get(uid)
                if study is not None:
                    study.file_sets.append(path)
        return catalog

    def serialized(self, catalog: Catalog) -> bytes:
        """`catalog` (from build) as stored: the parent's own bytes when nothing in it
        changed, which read back to an equal catalog."""
        if self.parent is not None and self.parent.loaded_from and catalog == self.parent:
            return self.parent.loaded_from
        return catalog.to_bytes()


def parse_studies(key: str, payload: bytes) -> list[Study]:
    """Only the studies of the catalog in `payload` (a reader that needs no file headers:
    building those is most of a 10,000-file catalog's parsing)."""
    try:
        doc = json.loads(payload)
        if doc.get("version") != 1:
            raise ValueError(f"unsupported catalog version {doc.get('version')!r}")
        return [_study(s) for s in doc["studies"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"{key} is malformed: {exc}", key=key) from None


def parse_catalog(key: str, payload: bytes) -> Catalog:
    """The catalog in `payload` (opened from `key`); IntegrityError naming it if malformed."""
    try:
        return Catalog.from_bytes(payload)
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"{key} is malformed: {exc}", key=key) from None
