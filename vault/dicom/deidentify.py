"""Header de-identification of DICOM files: DICOM PS3.15 Annex E, Basic Application Level
Confidentiality Profile, with the Retain Longitudinal Temporal Information (Modified Dates)
option when a date shift is given.

Why our own action table on pydicom rather than dicognito or deid: both are maintained and
permissively licensed, but dicognito replaces identifiers with realistic fake names and dates
(surprising in a teaching export and harder to audit), and deid needs a recipe language of its
own. The rules below are short, tested element by element, and documented in docs/dicom.md.

The rules, applied to every element at every nesting level:
- every private element is removed;
- attributes of the profile's remove list (names, addresses, physicians, institution, device
  serial numbers, free-text comments and descriptions, other patient IDs, ...) are removed;
- every other PN value becomes empty, except PatientName, which becomes "ANONYMOUS";
- PatientID becomes a per-export pseudonym; AccessionNumber and StudyID become empty;
- every UID that is not a DICOM-registered one (1.2.840.10008.*) is replaced by a new UID,
  the same replacement for the same original everywhere in one export;
- dates and date-times are shifted by `shift_days` when given, emptied otherwise; times are
  emptied unless dates are shifted;
- PatientIdentityRemoved = YES, DeidentificationMethod and its code sequence are set.

Pixel data is not touched: burned-in annotations and recognizable facial features in CBCT
volumes or photos remain. Every export says so.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import date, timedelta

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from vault import __version__

REGISTERED_UID_ROOT = "1.2.840.10008."

# PS3.15 Table E.1-1 attributes whose Basic Profile action is X (remove) or that carry free text.
REMOVE = {
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientTelecomInformation",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "MedicalRecordLocator",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "Occupation",
    "EthnicGroup",
    "MilitaryRank",
    "BranchOfService",
    "CountryOfResidence",
    "RegionOfResidence",
    "PatientReligiousPreference",
    "PatientComments",
    "AdditionalPatientHistory",
    "PatientInsurancePlanCodeSequence",
    "PatientBirthTime",
    "IssuerOfPatientID",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionCodeSequence",
    "InstitutionalDepartmentName",
    "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers",
    "ReferringPhysicianIdentificationSequence",
    "PhysiciansOfRecordIdentificationSequence",
    "PerformingPhysicianIdentificationSequence",
    "StationName",
    "DeviceSerialNumber",
    "DeviceUID",
    "PlateID",
    "DetectorID",
    "StudyDescription",
    "SeriesDescription",
    "ImageComments",
    "RequestedProcedureDescription",
    "PerformedProcedureStepDescription",
    "ScheduledProcedureStepDescription",
    "AdmittingDiagnosesDescription",
    "DerivationDescription",
    "ProtocolName",
    "RequestAttributesSequence",
    "RequestingService",
    "PerformedProcedureStepID",
    "ScheduledProcedureStepID",
    "ReasonForStudy",
    "ReasonForTheRequestedProcedure",
    "AdmissionID",
    "ResultsID",
    "InterpretationID",
    "CurrentPatientLocation",
    "PatientState",
    "ContentCreatorName",
    "FillerOrderNumberImagingServiceRequest",
    "PlacerOrderNumberImagingServiceRequest",
    "OrderCallbackPhoneNumber",
    "VisitComments",
    "TextValue",
    "TextString",
    "Overlays",
    "OverlayData",
    "CurveData",
    "AcquisitionComments",
    "ReferencedPatientSequence",
    "ReferencedStudySequence",
    "ModifiedAttributesSequence",
    "OriginalAttributesSequence",
    "DigitalSignaturesSequence",
}
# Type 2 attributes the profile empties (Z): present, but with no value.
EMPTY = {"AccessionNumber", "StudyID", "ReferringPhysicianName", "PatientBirthDate", "PatientSex"}


class Deidentifier:
    """One export's de-identification: consistent UID replacements and one patient pseudonym."""

    def __init__(self, *, shift_days: int | None = None) -> None:
        self.shift_days = shift_days
        self._salt = secrets.token_hex(16)
        self._uids: dict[str, str] = {}
        self.patient_pseudonym = "DEID-" + secrets.token_hex(4).upper()

    def uid(self, original: str) -> str:
        if original.startswith(REGISTERED_UID_ROOT) or not original:
            return original
        if original not in self._uids:
            self._uids[original] = str(generate_uid(entropy_srcs=[self._salt, original]))
        return self._uids[original]

    def apply(self, ds: pydicom.FileDataset) -> None:
        ds.remove_private_tags()
        self._clean(ds)
        meta = getattr(ds, "file_meta", None)
        if meta is not None and "MediaStorageSOPInstanceUID" in meta:
            meta.MediaStorageSOPInstanceUID = self.uid(str(meta.MediaStorageSOPInstanceUID))
        ds.PatientName = "ANONYMOUS"
        ds.PatientID = self.patient_pseudonym
        ds.PatientIdentityRemoved = "YES"
        # LO: at most 64 characters.
        method = f"vault {__version__} PS3.15 Basic Profile, header only"
        if self.shift_days is not None:
            method += ", dates shifted"
        ds.DeidentificationMethod = method
        codes = [("113100", "Basic Application Confidentiality Profile")]
        if self.shift_days is not None:
            codes.append(
                ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")
            )
        ds.DeidentificationMethodCodeSequence = Sequence([_code(v, m) for v, m in codes])
        ds.LongitudinalTemporalInformationModified = (
            "MODIFIED" if self.shift_days is not None else "REMOVED"
        )

    def _clean(self, ds: Dataset) -> None:
        for element in list(ds):
            keyword = element.keyword
            if keyword in REMOVE or (element.tag.group & 0xFF00) in (0x5000, 0x6000):
                del ds[element.tag]
            elif element.VR == "SQ":
                for item in element.value:
                    self._clean(item)
            elif keyword in EMPTY or (element.VR == "PN" and keyword != "PatientName"):
                element.value = ""
            elif element.VR == "UI":
                element.value = _map(element.value, self.uid)
            elif element.VR in ("DA", "DT"):
                element.value = (
                    _map(element.value, self._date) if self.shift_days is not None else ""
                )
            elif element.VR == "TM" and self.shift_days is None:
                element.value = ""

    def _date(self, value: str) -> str:
        assert self.shift_days is not None
        digits = value[:8]
        try:
            day = date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
        except ValueError:
            return ""
        return (day + timedelta(days=self.shift_days)).strftime("%Y%m%d") + value[8:]


def _map(value: object, change: Callable[[str], str]) -> object:
    if isinstance(value, list | pydicom.multival.MultiValue):
        return [change(str(v)) for v in value]
    return change(str(value)) if value not in (None, "") else value


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


def is_photo(ds: Dataset) -> bool:
    """Visible-light photographs (intraoral/extraoral photos): faces, excluded by default."""
    return str(ds.get("Modality", "")) in ("XC", "VL", "OP", "ES")


def read(path: str) -> pydicom.FileDataset:
    return pydicom.dcmread(path)
