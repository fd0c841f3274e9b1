"""restore.toml: the order a disaster restore brings the archive back in (a criticality list).

Each `[[tier]]` names what it holds: shell patterns on snapshot paths (`paths`), and/or the
DICOM studies of the snapshot's catalog (`studies = true`, optionally only those dated within
`within_days` of the snapshot). A file belongs to the first tier that claims it; whatever no
tier claims is restored last, as its own tier ("everything else"), so a priority file can
reorder a restore but never shrink it. Pure: parsing and validation only.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vault.errors import UsageError

REST_NAME = "everything else"
_KEYS = ("name", "paths", "studies", "within_days")


@dataclass(frozen=True)
class RestoreTier:
    name: str
    # Shell patterns (fnmatch, as backup's excludes): each is matched against the whole
    # snapshot path and against the name of the file or of any folder above it, so "Sidexis"
    # claims a whole folder and "*.sql" a kind of file.
    paths: tuple[str, ...] = ()
    studies: bool = False  # the catalog's DICOM studies, newest study date first
    within_days: int | None = None  # with studies: dated within this many days of the snapshot


@dataclass(frozen=True)
class RestorePriority:
    source: str  # the file it came from, for reports
    tiers: tuple[RestoreTier, ...]


def load_restore_priority(path: Path) -> RestorePriority:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read restore priority file {path}: {exc.strerror}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"restore priority file {path} is not valid TOML: {exc}") from None
    unknown = [key for key in doc if key != "tier"]
    if unknown:
        raise UsageError(f"{path}: unknown table or key {unknown[0]!r} (only [[tier]] is read)")
    raw = doc.get("tier", [])
    if not isinstance(raw, list) or not raw:
        raise UsageError(f"{path}: no [[tier]] tables: a priority file lists at least one tier")
    tiers = tuple(_tier(path, text, number, table) for number, table in enumerate(raw, start=1))
    names = [t.name for t in tiers]
    for name in names:
        if names.count(name) > 1 or name == REST_NAME:
            raise UsageError(f"{path}: tier name {name!r} is used twice (or is reserved)")
    return RestorePriority(str(path), tiers)


def _tier(path: Path, text: str, number: int, table: Any) -> RestoreTier:
    def fail(key: str, complaint: str) -> UsageError:
        line = _line_in_tier(text, number, key)
        where = f"{path}, line {line}" if line else str(path)
        return UsageError(f"{where}: tier {number}: {key} {complaint}")

    if not isinstance(table, dict):
        raise UsageError(f"{path}: tier {number} must be a [[tier]] table")
    for key in table:
        if key not in _KEYS:
            raise fail(key, f"is not a tier key (known: {', '.join(_KEYS)})")
    name = table.get("name")
    if not isinstance(name, str) or not name.strip():
        raise fail("name", "must be a non-empty string")
    paths = table.get("paths", [])
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        raise fail("paths", "must be a list of non-empty pattern strings")
    studies = table.get("studies", False)
    if not isinstance(studies, bool):
        raise fail("studies", "must be true or false")
    within = table.get("within_days")
    if within is not None:
        if not isinstance(within, int) or isinstance(within, bool) or not 1 <= within <= 36500:
            raise fail("within_days", "must be a whole number of days, from 1 to 36500")
        if not studies:
            raise fail("within_days", "needs studies = true (it limits the studies by date)")
    if not paths and not studies:
        raise fail("name", "claims nothing: give it paths = [...] or studies = true")
    return RestoreTier(name.strip(), tuple(paths), studies, within)


def _line_in_tier(text: str, number: int, key: str) -> int:
    """The line of `key` inside the number-th [[tier]] table (0 when not found)."""
    seen = 0
    for line_number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("[[tier]]"):
            seen += 1
        elif seen == number and stripped.startswith(key) and "=" in stripped:
            return line_number
    return 0
