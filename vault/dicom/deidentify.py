"""Header de-identification of DICOM files by PS3.15 Annex E, driven by Table E.1-1 as data.

Every element at every nesting level is looked up in the table (vault.dicom.profile) and gets
the table's action: removed (X), emptied (Z), a dummy value of its VR (D), its UID replaced by
one consistent throughout the export (U), kept (K). Private elements (odd groups) and curves are
in the table too; a whole overlay group goes. Elements no edition of the table names are
treated by their kind (`_unlisted`). PatientName and PatientID get the dummies Z allows
("ANONYMOUS" and one pseudonym per export), so the exported instances still belong together.
The file meta group is rebuilt from scratch (AE titles, private information).

Validity for the IOD (the issue the table alone does not settle):
- where the table allows several actions, the one valid for any attribute type (see profile);
- a Structured Report keeps its content tree: its Content Sequence is D, which vault applies
  as the table means it for a sequence: kept, every item cleaned by the same rules, and each
  item's value (Text Value, Person Name, Date, Time, DateTime; UID replaced) given a dummy,
  never removed, which would leave the content item invalid for its value type;
- coded terms stay intact: Coding Scheme UID and the rest of a code are not in the table.

Options of the profile: Retain Longitudinal Temporal Information with Modified Dates
(`shift_days`): every attribute whose option column says C is shifted (dates, date-times) or
kept (times), instead of the Basic Profile action. Clean Descriptors (`approved_descriptors`):
descriptor values a person reviewed and approved are kept, every other one goes. The method and
its codes are recorded in the file (DeidentificationMethodCodeSequence: 113100, 113107 with
shifted dates, 113105 with reviewed descriptors).

Pixel data is not touched. A file whose pixels may carry burned-in text (`burned_in`: the flag
anything but NO, recognizable features, an encapsulated document, or the flag absent on
modalities that often burn in) is refused by the export unless allowed, and then
PatientIdentityRemoved says NO. pydicom never prints here: its warnings quote values.

Why not dicognito (MIT, well kept): it replaces names, IDs, dates and UIDs with realistic fakes
and keeps the rest, so it is not a Basic Profile implementation (scripts/compare_deid.py counts
what its output keeps against the table); fakes also make a teaching copy harder to audit.
"""

from __future__ import annotations

import logging
import secrets
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pydicom
import pydicom.config
import pydicom.datadict
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID as UIDValue
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from vault import __version__
from vault.dicom.profile import (
    CLEAN,
    DUMMY,
    KEEP,
    REMOVE,
    UID,
    UID_ALL,
    ZERO,
    Rule,
    table,
)

pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
logging.getLogger("pydicom").setLevel(logging.CRITICAL)

REGISTERED_UID_ROOT = "1.2.840.10008."
CONTENT_SEQUENCE = 0x0040A730
# Values of an SR content item: required by the item's value type, so dummied, never removed.
_CONTENT_VALUES = {0x0040A160, 0x0040A123, 0x0040A121, 0x0040A122, 0x0040A120, 0x0040A124}
_CONTENT_UID = 0x0040A124
_CONTENT_DATES = {0x0040A121, 0x0040A120}  # Date, DateTime: shifted when dates are shifted
_PATIENT_NAME, _PATIENT_ID = 0x00100010, 0x00100020
_DATE_OPTION = "rtnLongModifDatesOpt"
DESCRIPTOR_OPTION = "cleanDescOpt"

# A dummy per VR (PS3.15 E.1.1: "a non-zero length value that may be a dummy value and
# consistent with the VR"); dates are the earliest a DA can say, recognisable as not real.
_DUMMIES: dict[str, Any] = {
    "AE": "DEIDENTIFIED",
    "AS": "000Y",
    "CS": "DEIDENTIFIED",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "LO": "DEIDENTIFIED",
    "LT": "DEIDENTIFIED",
    "SH": "DEIDENTIFIED",
    "ST": "DEIDENTIFIED",
    "UC": "DEIDENTIFIED",
    "UT": "DEIDENTIFIED",
    "PN": "ANONYMOUS",
    "UR": "",
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "UL": 0,
    "US": 0,
    "SV": 0,
    "UV": 0,
    "AT": 0,
}

# Modalities and SOP classes whose pixels often carry burned-in patient text when the file
# does not say (PS3.3 C.7.6.1.1.7): ultrasound, photographs, secondary captures, and the
# panoramic radiographs of some dental vendors.
BURN_IN_MODALITIES = {"US", "XC", "SC", "OT", "PX", "ES", "VL", "OP"}
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
_ENCAPSULATED_DOCUMENT = "1.2.840.10008.5.1.4.1.1.104."


@dataclass(frozen=True)
class BurnIn:
    """Whether a file's pixels may show patient text, and why (for the manifest)."""

    suspected: bool
    reason: str


def burned_in(ds: Dataset) -> BurnIn:
    """Fails closed: only a plain NO clears a file; an odd value counts as YES."""
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if sop_class.startswith(_ENCAPSULATED_DOCUMENT):
        return BurnIn(True, "an encapsulated document (PDF, CDA, …): its content is not cleaned")
    faces = ds.get("RecognizableVisualFeatures")
    if faces is not None and str(faces).strip().upper() != "NO":
        return BurnIn(True, "RecognizableVisualFeatures is not NO")
    if "BurnedInAnnotation" in ds:
        flag = ds.BurnedInAnnotation
        if isinstance(flag, str) and flag.strip().upper() == "NO":
            return BurnIn(False, "BurnedInAnnotation is NO")
        return BurnIn(True, "BurnedInAnnotation is not NO")
    modality = str(ds.get("Modality", "") or "")
    if modality in BURN_IN_MODALITIES:
        return BurnIn(True, f"BurnedInAnnotation is absent and modality {modality} often burns in")
    if sop_class.startswith(_SECONDARY_CAPTURE):
        return BurnIn(True, "BurnedInAnnotation is absent on a secondary capture")
    return BurnIn(False, "BurnedInAnnotation is absent; modality rarely burns in")


class Deidentifier:
    """One export's de-identification: consistent UID replacements and one patient pseudonym."""

    def __init__(
        self, *, shift_days: int | None = None, approved_descriptors: set[str] | None = None
    ) -> None:
        self.shift_days = shift_days
        # The Clean Descriptors option, done the one way that is sure: a person reviewed the
        # descriptor values (`descriptors`) and approved these exact ones as not identifying.
        self.approved = approved_descriptors
        self._salt = secrets.token_hex(16)
        self._uids: dict[str, str] = {}
        self.patient_pseudonym = "DEID-" + secrets.token_hex(4).upper()
        self._table = table()

    def uid(self, original: str) -> str:
        if original.startswith(REGISTERED_UID_ROOT) or not original:
            return original
        if original not in self._uids:
            self._uids[original] = str(generate_uid(entropy_srcs=[self._salt, original]))
        return self._uids[original]

    def apply(self, ds: pydicom.FileDataset, *, identity_removed: bool = True) -> None:
        self._clean(ds, in_content=False, all_uids=False)
        ds.file_meta = self._fresh_meta(ds)
        # What the profile asks a de-identifier to record (PS3.15 E.1.1, PS3.3 C.7.1.1).
        ds.PatientIdentityRemoved = "YES" if identity_removed else "NO"
        method = f"vault {__version__} PS3.15 Table E.1-1, header only"  # LO: <= 64 chars
        if self.shift_days is not None:
            method += ", dates shifted"
        if self.approved is not None:
            method += ", reviewed descriptors"
        ds.DeidentificationMethod = method
        codes = [("113100", "Basic Application Confidentiality Profile")]
        if self.shift_days is not None:
            codes.append(
                ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")
            )
        if self.approved is not None:
            codes.append(("113105", "Clean Descriptors Option"))
        ds.DeidentificationMethodCodeSequence = Sequence([_code(v, m) for v, m in codes])
        ds.LongitudinalTemporalInformationModified = (
            "MODIFIED" if self.shift_days is not None else "REMOVED"
        )

    def _fresh_meta(self, ds: pydicom.FileDataset) -> FileMetaDataset:
        """A new file meta group with only what a file needs: the original's names the sending
        and receiving AE titles and can carry private information (0002,0102)."""
        old = getattr(ds, "file_meta", None)
        meta = FileMetaDataset()
        syntax = old.get("TransferSyntaxUID") if old is not None else None
        if syntax:
            meta.TransferSyntaxUID = syntax
        sop_class = str(ds.get("SOPClassUID", "") or "")
        if not sop_class and old is not None:
            sop_class = str(old.get("MediaStorageSOPClassUID", "") or "")
        meta.MediaStorageSOPClassUID = UIDValue(sop_class)
        meta.MediaStorageSOPInstanceUID = UIDValue(str(ds.get("SOPInstanceUID", "") or ""))
        return meta

    # -- the walk ---------------------------------------------------------------------------

    def _clean(self, ds: Dataset, *, in_content: bool, all_uids: bool) -> None:
        for element in list(ds):
            tag = int(element.tag)
            rule = self._table.rule(tag)
            action = self._action(rule, tag, in_content)
            if self._approved_descriptor(rule, element):
                continue  # kept: a person approved this exact value
            if action == REMOVE:
                del ds[element.tag]
                continue
            if element.VR == "SQ":
                if action == ZERO:
                    element.value = Sequence()
                elif action == DUMMY and tag != CONTENT_SEQUENCE:
                    # A dummy sequence: one neutral code item. Cleaning its items instead would
                    # keep code meanings and texts the table does not list (an institution's
                    # name in its code, a person's ID).
                    element.value = Sequence([_code("DEID", "De-identified", "99VAULT")])
                else:
                    inside = tag == CONTENT_SEQUENCE or in_content
                    for item in element.value:
                        self._clean(item, in_content=inside, all_uids=all_uids or action == UID_ALL)
                continue
            if action == ZERO:
                self._zero(element)
            elif action == DUMMY:
                self._dummy(element, rule)
            elif action in (UID, UID_ALL) or (all_uids and element.VR == "UI"):
                element.value = _map(element.value, self.uid)
            elif action == "shift" and element.VR in ("DA", "DT"):
                element.value = _map(element.value, self._date)
            # "shift" on any other VR (times, a timezone offset): kept, as the option says

    def _action(self, rule: Rule | None, tag: int, in_content: bool) -> str:
        if 0x6000 <= tag >> 16 <= 0x601E and not (tag >> 16) & 1:
            # An overlay: the table removes its data and comments; the rest of the group goes
            # too, or the file keeps an Overlay Plane without its Type 1 data (invalid) and its
            # free-text label and description.
            return REMOVE
        if in_content and tag in _CONTENT_VALUES:
            # The Content Sequence is D: its items' values get dummies (kept present, as the
            # item's value type requires); UIDs are replaced, dates shifted when asked.
            if tag == _CONTENT_UID:
                return UID
            if self.shift_days is not None and tag in _CONTENT_DATES:
                return "shift"
            return DUMMY
        if rule is None:
            return self._unlisted(tag)
        if self.shift_days is not None and rule.options.get(_DATE_OPTION) == CLEAN:
            return "shift"  # dates shifted, times kept: the option's "C"
        return rule.action

    def _approved_descriptor(self, rule: Rule | None, element: DataElement) -> bool:
        if self.approved is None or rule is None or element.VR == "SQ":
            return False
        if rule.options.get(DESCRIPTOR_OPTION) != CLEAN:
            return False
        return _text(element.value) in self.approved

    def _unlisted(self, tag: int) -> str:
        """What no shipped edition of the table names (a newer edition's rows, a vendor's use
        of a standard tag): rather than keep it, vault does what the table does to its kind:
        names, dates and times, AE titles and free text go, instance UIDs are replaced. Coded
        terms, measurements and class UIDs stay (docs/dicom.md, "Beyond the table")."""
        vr = _vr_of(tag)
        if vr in ("PN", "DA", "DT", "TM", "ST", "LT", "UT", "AE"):
            if vr in ("DA", "DT") and self.shift_days is not None:
                return "shift"
            if vr == "TM" and self.shift_days is not None:
                return KEEP
            return ZERO
        if vr == "UI" and not _is_class_or_scheme_uid(tag):
            return UID
        return KEEP

    def _zero(self, element: DataElement) -> None:
        tag = int(element.tag)
        if tag == _PATIENT_NAME:
            element.value = "ANONYMOUS"
        elif tag == _PATIENT_ID:
            element.value = self.patient_pseudonym
        elif element.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
            element.value = b""
        else:
            element.value = None if element.VR in _NUMERIC else ""

    def _dummy(self, element: DataElement, rule: Rule | None) -> None:
        tag = int(element.tag)
        if tag in (_PATIENT_NAME, _PATIENT_ID):
            self._zero(element)
        elif element.VR == "UI":
            element.value = _map(element.value, self.uid)
        elif element.VR in ("DA", "DT") and self.shift_days is not None and element.value:
            element.value = _map(element.value, self._date)
        elif element.VR in _DUMMIES:
            element.value = _DUMMIES[element.VR]
        else:  # binary VRs (OB, OW, UN, …): nothing identifying is left
            element.value = b""

    def _date(self, value: str) -> str:
        assert self.shift_days is not None
        digits = value[:8]
        try:
            day = date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
        except ValueError:
            return ""
        return (day + timedelta(days=self.shift_days)).strftime("%Y%m%d") + value[8:]


_NUMERIC = {"FL", "FD", "SL", "SS", "UL", "US", "SV", "UV", "AT"}


def _map(value: object, change: Callable[[str], str]) -> object:
    if isinstance(value, list | pydicom.multival.MultiValue):
        return [change(str(v)) for v in value]
    return change(str(value)) if value not in (None, "") else value


def _code(value: str, meaning: str, scheme: str = "DCM") -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _vr_of(tag: int) -> str:
    if (tag >> 16) & 1:
        return ""  # private: the table's private row decides
    try:
        return str(pydicom.datadict.dictionary_VR(tag)).split(" or ")[0]
    except KeyError:
        return ""


def _is_class_or_scheme_uid(tag: int) -> bool:
    """UIDs that name a kind of thing, not an instance: kept (coded terms, SOP classes)."""
    try:
        keyword = pydicom.datadict.keyword_for_tag(tag)
    except KeyError:
        return True
    return keyword.endswith("ClassUID") or any(
        part in keyword
        for part in (
            "CodingScheme",
            "ContextGroup",
            "MappingResource",
            "TransferSyntax",
            "Implementation",
            "Private",
        )
    )


def is_photo(ds: Dataset) -> bool:
    """Visible-light photographs (intraoral/extraoral photos): faces, excluded by default."""
    return str(ds.get("Modality", "")) in ("XC", "VL", "OP", "ES")


def read(path: str) -> pydicom.FileDataset:
    """A study file as the catalog recognised it: with or without preamble and meta group."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, force=True)
    if "SOPClassUID" not in ds and "DirectoryRecordSequence" not in ds:
        raise ValueError("not a DICOM instance")
    return ds


def write(ds: pydicom.FileDataset, path: str) -> None:
    """Written as a DICOM file (preamble, meta group) even when the original had neither."""
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        implicit, little = getattr(ds, "original_encoding", (True, True))
        meta = meta if meta is not None else FileMetaDataset()
        meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian
            if implicit
            else ExplicitVRLittleEndian
            if little
            else ExplicitVRBigEndian
        )
        meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", "")
        meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", "")
        ds.file_meta = meta
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(path, enforce_file_format=True)


def _text(value: object) -> str:
    if isinstance(value, list | pydicom.multival.MultiValue):
        return "\\".join(str(v) for v in value)
    return "" if value is None else str(value)


def descriptors(ds: Dataset) -> list[tuple[str, str]]:
    """(keyword, value) of every non-empty descriptor the Clean Descriptors option may keep
    (Table E.1-1 rows whose cleanDescOpt column says C), at every level: for a person's review."""
    rules = table()
    found = []
    for element in ds.iterall():
        rule = rules.rule(int(element.tag))
        if element.VR == "SQ" or rule is None or rule.options.get(DESCRIPTOR_OPTION) != CLEAN:
            continue
        value = _text(element.value)
        if value.strip():
            found.append((element.keyword or str(element.tag), value))
    return found
