"""Finding DICOM studies across snapshots, and choosing the files of studies to restore.

Searching happens here, on the decrypted catalogs: nothing identifying is ever sent to the
storage (which sees only GETs of sealed catalog objects)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

from vault.dicom.catalog import Catalog, Study
from vault.dicom.header import normalise_date
from vault.errors import UsageError
from vault.format.snapshot import Snapshot
from vault.repo.repository import Repository


@dataclass(frozen=True)
class StudyFilter:
    patient_id: str | None = None
    name: str | None = None
    since: str | None = None  # YYYYMMDD
    until: str | None = None
    modality: str | None = None

    def matches(self, study: Study) -> bool:
        if self.patient_id is not None and study.patient_id != self.patient_id:
            return False
        if self.name is not None and name_key(self.name) not in name_key(study.patient_name):
            return False
        # Catalogs before 0.3 kept dates as written (1994.11.05): normalised here too.
        day = normalise_date(study.study_date)
        if self.since is not None and (not day or day < self.since):
            return False
        if self.until is not None and (not day or day > self.until):
            return False
        return self.modality is None or self.modality.upper() in study.modalities

    @property
    def identifying(self) -> bool:
        """Whether the search names a patient (such searches are audited)."""
        return self.patient_id is not None or self.name is not None


def name_key(text: str) -> str:
    """A person name for matching: components (^) and groups (=: alphabetic, ideographic,
    phonetic) as words, case folded, so "WANG^XIAODONG", "wang xiaodong" and "Xiaodong" all
    find "Wang^XiaoDong=王^小东"."""
    return " ".join(text.replace("^", " ").replace("=", " ").split()).casefold()


def parse_date(text: str | None, option: str) -> str | None:
    """YYYY-MM-DD, YYYYMMDD or the old dotted YYYY.MM.DD as DICOM's YYYYMMDD."""
    if text is None:
        return None
    compact = text.replace("-", "").replace(".", "")
    try:
        date(int(compact[:4]), int(compact[4:6]), int(compact[6:8]))
    except ValueError:
        raise UsageError(f"{option} {text!r} is not a date (YYYY-MM-DD)") from None
    if len(compact) != 8:
        raise UsageError(f"{option} {text!r} is not a date (YYYY-MM-DD)")
    return compact


_DATE = r"\d{4}-\d{2}-\d{2}|\d{4}\.\d{2}\.\d{2}|\d{8}"
_RANGE = re.compile(rf"(?P<first>{_DATE})?(?P<dash>-)?(?P<second>{_DATE})?")


def parse_date_range(text: str) -> tuple[str | None, str | None]:
    """A DICOM date range (PS3.4 C.2.2.2.5): "D", "D1-D2", "-D2" or "D1-", each date as
    YYYYMMDD, YYYY-MM-DD or the old dotted YYYY.MM.DD. Returns (since, until)."""
    found = _RANGE.fullmatch(text.strip())
    if found is None or not (found["first"] or found["second"]):
        raise UsageError(f"--date {text!r} is not a date or a range (20240301-20240331)")
    first, second = found["first"], found["second"]
    if not found["dash"]:
        if second:
            raise UsageError(f"--date {text!r} is not a date or a range (20240301-20240331)")
        day = parse_date(first, "--date")
        return day, day
    since = parse_date(first, "--date") if first else None
    until = parse_date(second, "--date") if second else None
    if since and until and since > until:
        raise UsageError(f"--date {text!r} ends before it starts")
    return since, until


@dataclass
class StudyRow:
    study: Study  # as in the newest snapshot that holds it
    snapshots: list[str] = field(default_factory=list)


def catalogs(repo: Repository, only: Snapshot | None = None) -> list[tuple[Snapshot, Catalog]]:
    chosen = [only] if only else repo.snapshots()
    found = []
    for snapshot in chosen:
        catalog = repo.load_catalog(snapshot)
        if catalog is not None:
            found.append((snapshot, catalog))
    return found


def find_studies(
    repo: Repository, query: StudyFilter, only: Snapshot | None = None
) -> list[StudyRow]:
    rows: dict[str, StudyRow] = {}
    for snapshot, catalog in catalogs(repo, only):  # oldest first: the newest entry wins
        for study in catalog.studies.values():
            if not query.matches(study):
                continue
            row = rows.setdefault(study.catalog_id, StudyRow(study))
            row.study = study
            row.snapshots.append(snapshot.id)
    return sorted(rows.values(), key=lambda r: (r.study.study_date, r.study.catalog_id))


def select_studies(
    repo: Repository,
    snapshot: Snapshot,
    refs: list[str],
    query: StudyFilter | None,
    catalog: Catalog | None = None,
) -> list[Study]:
    """The studies of `snapshot` named by UID or catalog id, or matching `query` (`catalog`:
    the snapshot's, when the caller has read it already)."""
    catalog = catalog or repo.load_catalog(snapshot)
    if catalog is None:
        raise UsageError(f"snapshot {snapshot.id[:8]} has no study catalog (made before 0.2)")
    chosen: dict[str, Study] = {}
    for ref in refs:
        study = catalog.find(ref)
        if study is None:
            holders = [s.id[:8] for s, c in catalogs(repo) if c.find(ref) is not None]
            where = (
                f"; snapshots that hold it: {', '.join(holders)}"
                if holders
                else "; no snapshot holds it"
            )
            raise UsageError(f"study {ref} is not in snapshot {snapshot.id[:8]}{where}")
        chosen[study.catalog_id] = study
    if query is not None:
        matching = [s for s in catalog.studies.values() if query.matches(s)]
        if not matching:
            raise UsageError(f"no study in snapshot {snapshot.id[:8]} matches the patient filter")
        for study in matching:
            chosen[study.catalog_id] = study
    return sorted(chosen.values(), key=lambda s: s.catalog_id)


def file_sets_of(catalog: Catalog, studies: list[Study]) -> tuple[list[str], list[str]]:
    """(DICOMDIRs to restore with `studies`, DICOMDIRs left out). A DICOMDIR comes along only
    when every study it lists is restored: then all the files it names are there and the
    file-set stays valid; one that lists other studies too would name missing files."""
    chosen = {s.study_uid for s in studies}
    restored = [f for s in studies for f in s.files]
    keep: list[str] = []
    leave: list[str] = []
    for path in sorted({p for s in studies for p in s.file_sets}):
        header = catalog.file_headers.get(path)
        listed = set(header.dicomdir_studies) if header else set()
        # And every file it names comes back: a file-set can name files in no study
        # (unreadable ones), which a one-study restore would not bring.
        folder = path.rsplit("/", 1)[0] + "/"
        under = sum(1 for f in restored if f.startswith(folder))
        complete = header is not None and (
            not header.dicomdir_files or under >= header.dicomdir_files
        )
        (keep if listed and listed <= chosen and complete else leave).append(path)
    return keep, leave
