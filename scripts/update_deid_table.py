#!/usr/bin/env python3
"""Write vault/dicom/data/confidentiality_profile_additions.json: the rows of a newer edition of
PS3.15 Table E.1-1 that the shipped machine-readable copy (innolitics, an older edition) lacks.

The newer edition is read from dicom-anonymizer (KitwareMedical, BSD-3-Clause), which keeps one
list of tags per Basic Profile action for each edition of the standard it tracks; only the facts
are taken (tag, attribute name, action), as data, never its code. Run after upgrading
dicom-anonymizer, then run tests/test_deid_profile.py, which applies every row:

    pip install dicom-anonymizer && python scripts/update_deid_table.py
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "vault" / "dicom" / "data"
BASE = DATA / "confidentiality_profile_attributes.json"
OUT = DATA / "confidentiality_profile_additions.json"
EDITION = "2026c"
# The lists the module names, and the Basic Profile action each stands for.
LISTS = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}
_ROW = re.compile(r"\(0x([0-9A-Fa-f]{4}),\s*0x([0-9A-Fa-f]{4})\),\s*#\s*(.+)$")


def _rows(source: str) -> list[dict[str, str]]:
    rows, action = [], None
    for line in source.splitlines():
        header = re.match(r"^([A-Z_]+) = \[", line)
        if header:
            action = LISTS.get(header.group(1))
            continue
        if line.startswith("]"):
            action = None
            continue
        found = _ROW.search(line.strip())
        if action and found:
            group, elem, name = found.groups()
            tag = f"({group.upper()},{elem.upper()})"
            rows.append({"tag": tag, "name": name.strip(), "basicProfile": action})
    return rows


def main() -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    spec = importlib.util.find_spec("dicomanonymizer")
    if spec is None or spec.origin is None:
        print("dicom-anonymizer is not installed: pip install dicom-anonymizer", file=sys.stderr)
        return 2
    databases = Path(spec.origin).parent / "dicom_anonymization_databases"
    module = databases / f"dicomfields_{EDITION}.py"
    source = module.read_text(encoding="utf-8")
    base = {row["tag"].upper() for row in json.loads(BASE.read_text(encoding="utf-8"))}
    added, seen = [], set()
    for row in _rows(source):
        if row["tag"] in base or row["tag"] in seen:
            continue
        seen.add(row["tag"])
        added.append({**row, "id": row["tag"][1:-1].replace(",", "").lower(), "edition": EDITION})
    added.sort(key=lambda r: r["tag"])
    OUT.write_text(json.dumps(added, indent=1) + "\n", encoding="utf-8")
    digest = hashlib.sha256(OUT.read_bytes()).hexdigest()
    print(f"{len(added)} rows of PS3.15 {EDITION} not in the base table -> {OUT} (sha256 {digest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
