"""C-FIND: asking a PACS what it holds of a study, at study, series and image level.

This is the application-level proof of a drill: not "the files came back" but "the PACS the
practice would read from has every instance, under the right study and series, in the right
numbers". The UIDs asked for and answered stay in this module and its caller's memory; what
leaves it is counts.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
)

from vault.pacs.connect import Context, PacsError, association
from vault.policy.pacs import PacsEndpoint
from vault.units import whole_number

QUERY_SYNTAXES = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
PENDING = (0xFF00, 0xFF01)
FIND_CONTEXT = Context(str(StudyRootQueryRetrieveInformationModelFind), QUERY_SYNTAXES)


@dataclass
class ExpectedStudy:
    """A study's UIDs as the restored files say: series UID -> SOP instance UIDs."""

    study_uid: str
    series: dict[str, set[str]] = field(default_factory=dict)

    @property
    def instances(self) -> int:
        return sum(len(s) for s in self.series.values())


def expected_from_files(paths: Iterable[Path]) -> list[ExpectedStudy]:
    """The studies, series and instances in these DICOM files (headers only)."""
    studies: dict[str, ExpectedStudy] = {}
    for path in paths:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            study, series, instance = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                                       str(ds.SOPInstanceUID))  # fmt: skip
        except Exception:
            continue
        studies.setdefault(study, ExpectedStudy(study)).series.setdefault(series, set()).add(
            instance
        )
    return list(studies.values())


@dataclass
class Held:
    """What the PACS answered about one expected study: counts only."""

    study_found: bool = False
    series_expected: int = 0
    series_found: int = 0
    instances_expected: int = 0
    instances_found: int = 0  # of the expected ones
    instances_extra: int = 0  # held under the study but not among the expected
    reported_instances: int | None = None  # NumberOfStudyRelatedInstances, when answered
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return (
            self.study_found
            and self.series_found == self.series_expected
            and self.instances_found == self.instances_expected
            and not self.problems
        )


def held(endpoint: PacsEndpoint, expected: ExpectedStudy) -> Held:
    """Ask the PACS (C-FIND, study root) whether it holds every expected instance."""
    answer = Held(series_expected=len(expected.series), instances_expected=expected.instances)
    with association(endpoint, [FIND_CONTEXT]) as assoc:
        studies = find_on(
            assoc, _query("STUDY", expected.study_uid, NumberOfStudyRelatedInstances="")
        )
        answer.study_found = any(str(s.get("StudyInstanceUID", "")) == expected.study_uid
                                 for s in studies)  # fmt: skip
        for s in studies:
            count = s.get("NumberOfStudyRelatedInstances")
            if count not in (None, ""):
                # What the PACS says, as the PACS wrote it: a count that is not a plain
                # number is not a count (and must not stop the comparison).
                reported = whole_number(str(count).strip(), 9)
                if reported is not None:
                    answer.reported_instances = reported
        series = find_on(assoc, _query("SERIES", expected.study_uid, SeriesInstanceUID=""))
        found_series = {str(s.get("SeriesInstanceUID", "")) for s in series}
        answer.series_found = len(found_series & set(expected.series))
        for series_uid, instances in expected.series.items():
            if series_uid not in found_series:
                continue
            query = _query("IMAGE", expected.study_uid, SeriesInstanceUID=series_uid,
                           SOPInstanceUID="")  # fmt: skip
            images = find_on(assoc, query)
            got = {str(i.get("SOPInstanceUID", "")) for i in images}
            answer.instances_found += len(got & instances)
            answer.instances_extra += len(got - instances)
    if answer.reported_instances is not None and answer.reported_instances < answer.instances_found:
        answer.problems.append("the PACS's own instance count is below the instances it lists")
    return answer


def _query(level: str, study_uid: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    ds.StudyInstanceUID = study_uid
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def find_on(assoc: object, query: Dataset) -> list[Dataset]:
    """The identifiers a C-FIND (study root) on an open association answers."""
    found = []
    try:
        responses = list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))  # type: ignore[attr-defined]
    except (RuntimeError, ValueError, AttributeError):  # no association, or no such context
        raise PacsError(
            "the PACS does not answer C-FIND (study root), or the association broke"
        ) from None
    for status, identifier in responses:
        code = getattr(status, "Status", None)
        if code is None:
            raise PacsError("the PACS did not answer a C-FIND (the association broke)")
        if code in PENDING:
            if identifier is not None:
                found.append(identifier)
        elif code != 0x0000:
            raise PacsError(f"the PACS answered a C-FIND with status 0x{code:04X}")
    return found
