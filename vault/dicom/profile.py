"""DICOM PS3.15 Table E.1-1 (the Basic Application Level Confidentiality Profile) as data.

The table ships as `vault/dicom/data/confidentiality_profile_attributes.json` (source and
edition in `vault/dicom/data/SOURCE.md`): every attribute the profile names, with its Basic
Profile action and the actions of the profile's options. This module turns it into one
decision per attribute; vault.dicom.deidentify applies the decisions.

Actions (PS3.15 E.1.1): D replace with a dummy value, Z zero length (or a dummy), X remove,
K keep, C clean, U replace the UID consistently. Where the table allows several ("X/Z",
"X/D", "Z/D", "X/Z/D", "X/Z/U*"), which one is required depends on the attribute's type in
the object's IOD, which vault does not track per module. So vault takes the one that is valid
whatever the type and still removes the information: D over Z over X (a dummy satisfies a
Type 1 attribute, an empty value a Type 2, and neither carries the original), and U* (keep a
sequence, replacing every UID in it) for "X/Z/U*", which keeps references between the exported
instances intact. Pure: no pydicom.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources

DUMMY, ZERO, REMOVE, KEEP, CLEAN, UID = "D", "Z", "X", "K", "C", "U"
UID_ALL = "U*"  # keep the sequence, replace every UID inside it
_PREFERENCE = (DUMMY, UID_ALL, UID, ZERO, REMOVE, KEEP, CLEAN)

TABLE_FILE = "confidentiality_profile_attributes.json"
# Rows of a newer edition that TABLE_FILE's edition lacks (scripts/update_deid_table.py).
ADDITIONS_FILE = "confidentiality_profile_additions.json"
# The edition the shipped copy was made from (vault/dicom/data/SOURCE.md).
TABLE_EDITION = "innolitics/dicom-standard 0d01bf1, with the rows PS3.15 2026c adds"
_TAG = re.compile(r"^\(([0-9A-Fx]{4}),([0-9A-Fx]{4})\)$", re.IGNORECASE)


@dataclass(frozen=True)
class Rule:
    name: str
    tag: str  # as the table writes it, e.g. "(0010,0010)" or "(50XX,XXXX)"
    basic: str  # the Basic Profile column, e.g. "X/Z/D"
    action: str  # the one vault applies (see the module docstring)
    options: dict[str, str]  # option column -> action, e.g. {"rtnLongModifDatesOpt": "C"}
    mask: int = 0xFFFFFFFF  # the bits of a tag that must equal `value`
    value: int = 0
    private: bool = False  # the "(gggg,eeee) where gggg is odd" row

    def matches(self, tag: int) -> bool:
        if self.private:
            return bool((tag >> 16) & 1)
        return (tag & self.mask) == self.value


def resolve(basic: str) -> str:
    """The one action vault applies for a Basic Profile entry such as "X/Z/D"."""
    choices = [c.strip() for c in basic.split("/") if c.strip()]
    for action in _PREFERENCE:
        if action in choices:
            return action
    raise ValueError(f"unknown Basic Profile action {basic!r}")


def _pattern(tag: str) -> tuple[int, int] | None:
    found = _TAG.match(tag.strip())
    if found is None:
        return None
    digits = found.group(1) + found.group(2)
    mask = value = 0
    for ch in digits:
        mask, value = mask << 4, value << 4
        if ch not in "xX":
            mask |= 0xF
            value |= int(ch, 16)
    return mask, value


@dataclass(frozen=True)
class Table:
    exact: dict[int, Rule]
    patterns: tuple[Rule, ...]  # wildcard rows (curves, overlays) and the private row

    def rule(self, tag: int) -> Rule | None:
        found = self.exact.get(tag)
        if found is not None:
            return found
        for rule in self.patterns:
            if rule.matches(tag):
                return rule
        return None

    @property
    def rules(self) -> list[Rule]:
        return [*self.exact.values(), *self.patterns]


def parse(entries: list[dict[str, str]]) -> Table:
    exact: dict[int, Rule] = {}
    patterns: list[Rule] = []
    for entry in entries:
        basic = entry["basicProfile"]
        options = {k: v for k, v in entry.items() if k.endswith("Opt") and isinstance(v, str) and v}
        rule = Rule(entry["name"], entry["tag"], basic, resolve(basic), options)
        found = _pattern(entry["tag"])
        if found is None:
            if "odd" not in entry["tag"].lower() and "odd" not in entry["name"].lower():
                raise ValueError(f"unreadable tag {entry['tag']!r} in Table E.1-1")
            patterns.append(Rule(rule.name, rule.tag, basic, rule.action, options, private=True))
            continue
        mask, value = found
        rule = Rule(rule.name, rule.tag, basic, rule.action, options, mask=mask, value=value)
        if mask == 0xFFFFFFFF:
            exact[value] = rule
        else:
            patterns.append(rule)
    # Specific wildcard rows before broad ones ((60XX,3000) before (60XX,XXXX)).
    patterns.sort(key=lambda r: (r.private, -bin(r.mask).count("1")))
    return Table(exact, tuple(patterns))


@functools.cache
def table() -> Table:
    data = resources.files("vault.dicom").joinpath("data")
    base = json.loads(data.joinpath(TABLE_FILE).read_text("utf-8"))
    additions = json.loads(data.joinpath(ADDITIONS_FILE).read_text("utf-8"))
    known = {row["tag"].upper() for row in base}
    return parse(base + [row for row in additions if row["tag"].upper() not in known])
