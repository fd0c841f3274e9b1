#!/usr/bin/env python3
"""vault's de-identification beside dicognito's on the same real files, row by row of Table E.1-1.

For every DICOM file of pydicom's corpus (its bundled test files and pydicom-data), both tools
de-identify a copy; then for every attribute of PS3.15 Table E.1-1 that the original holds with a
non-empty value (at any nesting level), the script records whether each tool's output still
holds that same value somewhere at the same tag: a leak by the table's rules (the row says the
value must go or change; K rows are not counted). It also counts outputs pydicom cannot read
back. dicognito must be installed (`pip install dicognito`); it is not a vault dependency.

    python scripts/compare_deid.py            # summary
    python scripts/compare_deid.py --rows     # and every leaking row
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pydicom

from tests.corpus import corpus_files
from vault.dicom.deidentify import Deidentifier
from vault.dicom.profile import KEEP, table

logging.getLogger("pydicom").setLevel(logging.CRITICAL)
logging.getLogger("dicognito").setLevel(logging.CRITICAL)


def _values(ds: Any) -> dict[int, set[str]]:
    """Every non-empty value per tag, at every nesting level."""
    found: dict[int, set[str]] = {}
    for element in ds.iterall():
        if element.VR == "SQ" or element.value in (None, "", b""):
            continue
        found.setdefault(int(element.tag), set()).add(repr(element.value))
    return found


# Kinds of value that identify whatever the edition of the table: names, dates and times,
# AE titles, free text. Counted for attributes the shipped table does not list.
_IDENTIFYING_VRS = {"PN", "DA", "DT", "TM", "AE", "ST", "LT", "UT"}


def _unlisted_identifying(ds: Any, rules: Any) -> dict[int, set[str]]:
    found: dict[int, set[str]] = {}
    for element in ds.iterall():
        tag = int(element.tag)
        if element.VR not in _IDENTIFYING_VRS or element.value in (None, "", b""):
            continue
        if rules.rule(tag) is None and element.keyword not in _SET_BY_DEIDENTIFIERS:
            found.setdefault(tag, set()).add(repr(element.value))
    return found


_SET_BY_DEIDENTIFIERS = {"DeidentificationMethod"}


def _roundtrip(ds: Any) -> bool:
    try:
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        pydicom.dcmread(io.BytesIO(out.getvalue()))
        return True
    except Exception:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", action="store_true", help="list every leaking row")
    args = parser.parse_args()
    try:
        from dicognito.anonymizer import Anonymizer
    except ImportError:
        print("dicognito is not installed: pip install dicognito", file=sys.stderr)
        return 2
    rules = table()
    leaks: dict[str, Counter[str]] = {"vault": Counter(), "dicognito": Counter()}
    beyond: dict[str, Counter[str]] = {"vault": Counter(), "dicognito": Counter()}
    unreadable: Counter[str] = Counter()
    files = checked = 0
    for path in corpus_files():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                original = pydicom.dcmread(path)
            except Exception:
                continue
            if "SOPClassUID" not in original or (
                "PixelData" not in original and ("DirectoryRecordSequence" in original)
            ):
                continue
            files += 1
            before = _values(original)
            unlisted = _unlisted_identifying(original, rules)
            outputs = {}
            ours = pydicom.dcmread(path)
            Deidentifier().apply(ours)
            outputs["vault"] = ours
            theirs = pydicom.dcmread(path)
            try:
                Anonymizer(seed="compare").anonymize(theirs)
                outputs["dicognito"] = theirs
            except Exception:
                unreadable["dicognito (raised)"] += 1
            for tool, ds in outputs.items():
                if not _roundtrip(ds):
                    unreadable[tool] += 1
                after = _values(ds)
                for tag, values in before.items():
                    rule = rules.rule(tag)
                    if rule is None or rule.action == KEEP:
                        continue
                    checked += tool == "vault"
                    if values & after.get(tag, set()):
                        leaks[tool][f"{rule.tag} {rule.name.splitlines()[0]}"] += 1
                for tag, values in unlisted.items():
                    if values & after.get(tag, set()):
                        beyond[tool][pydicom.datadict.keyword_for_tag(tag) or hex(tag)] += 1
    print(
        f"{files} DICOM files; {checked} (file, Table E.1-1 attribute) values to remove or change"
    )
    for tool, counter in leaks.items():
        print(
            f"{tool:10} values kept where the table says remove/replace: {sum(counter.values())}"
            f" in {len(counter)} rows; outputs pydicom cannot read back: {unreadable[tool]}"
        )
        if args.rows:
            for row, n in counter.most_common():
                print(f"    {n:4}  {row}")
    print("names, dates, times, AE titles and free text in attributes the shipped table does not")
    print("list (rows of later editions, e.g. Instance Creation Date), still in the output:")
    for tool, counter in beyond.items():
        top = ", ".join(f"{k} {n}" for k, n in counter.most_common(6))
        print(f"  {tool:10} {sum(counter.values())}" + (f" ({top})" if top else ""))
    if unreadable["dicognito (raised)"]:
        print(f"dicognito raised on {unreadable['dicognito (raised)']} file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
