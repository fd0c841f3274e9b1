"""The golden repository's fixed inputs, and where the repository lives.

`scripts/make_golden_repo.py` backs these inputs up with the format version of its day into
`tests/data/golden-v1/`; `tests/test_golden.py` opens that repository with today's code and
restores every snapshot against them. The inputs are written byte by byte here, without pydicom
or a random generator, so they are the same on every machine and with every library version:
the repository's hashes were taken of exactly these bytes.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent
GOLDEN_REPO = HERE / "data" / "golden-v1"
PASSPHRASE = "golden repository test passphrase"  # a test fixture, not a secret
STUDY_UID = "1.2.826.0.1.3680043.10.1234.1"
SECOND_STUDY_UID = "1.2.826.0.1.3680043.10.1234.2"
PATIENT_ID = "GOLDEN-0001"
# Every input's modification time, so a restore's mtimes can be compared too.
MTIME_NS = 1_767_225_600_000_000_000  # 2026-01-01 00:00:00 UTC
SNAPSHOT_TIMES = ("2026-01-05 22:00:00", "2026-01-06 22:00:00")

_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
_EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _element(group: int, elem: int, vr: str, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0" if vr == "UI" else b" "
    if vr in ("OB", "OW", "SQ", "UN", "UT"):
        return struct.pack("<HH2sHI", group, elem, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr.encode(), len(value)) + value


def dicom_file(study_uid: str, instance: int, patient_name: str, pixels: bytes) -> bytes:
    """A small, valid Part 10 file (explicit VR little endian, secondary capture)."""
    sop_uid = f"{study_uid}.{instance}"
    meta_body = (
        _element(0x0002, 0x0001, "OB", b"\0\1")
        + _element(0x0002, 0x0002, "UI", _SECONDARY_CAPTURE.encode())
        + _element(0x0002, 0x0003, "UI", sop_uid.encode())
        + _element(0x0002, 0x0010, "UI", _EXPLICIT_LE.encode())
    )
    meta = _element(0x0002, 0x0000, "UL", struct.pack("<I", len(meta_body))) + meta_body
    side = 16
    body = (
        _element(0x0008, 0x0016, "UI", _SECONDARY_CAPTURE.encode())
        + _element(0x0008, 0x0018, "UI", sop_uid.encode())
        + _element(0x0008, 0x0020, "DA", b"20260105")
        + _element(0x0008, 0x0050, "SH", b"ACC-GOLDEN")
        + _element(0x0008, 0x0060, "CS", b"OT")
        + _element(0x0008, 0x1030, "LO", b"Golden repository fixture")
        + _element(0x0010, 0x0010, "PN", patient_name.encode())
        + _element(0x0010, 0x0020, "LO", PATIENT_ID.encode())
        + _element(0x0010, 0x0030, "DA", b"19700101")
        + _element(0x0020, 0x000D, "UI", study_uid.encode())
        + _element(0x0020, 0x000E, "UI", f"{study_uid}.100".encode())
        + _element(0x0020, 0x0013, "IS", str(instance).encode())
        + _element(0x0028, 0x0002, "US", struct.pack("<H", 1))
        + _element(0x0028, 0x0004, "CS", b"MONOCHROME2")
        + _element(0x0028, 0x0010, "US", struct.pack("<H", side))
        + _element(0x0028, 0x0011, "US", struct.pack("<H", side))
        + _element(0x0028, 0x0100, "US", struct.pack("<H", 16))
        + _element(0x0028, 0x0101, "US", struct.pack("<H", 12))
        + _element(0x0028, 0x0102, "US", struct.pack("<H", 11))
        + _element(0x0028, 0x0103, "US", struct.pack("<H", 0))
        + _element(0x7FE0, 0x0010, "OW", pixels[: side * side * 2].ljust(side * side * 2, b"\0"))
    )
    return b"\0" * 128 + b"DICM" + meta + body


def _bytes(label: str, size: int) -> bytes:
    """Deterministic, incompressible-looking content: SHA-256 in counter mode."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{label}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def inputs(version: int) -> dict[str, bytes | str]:
    """Relative path -> file content (bytes) or symlink target (str) of the archive at backup
    `version` (1 or 2). Version 2 corrects a patient name, adds a study and removes a file."""
    name = "GOLDEN^PATIENT" if version == 1 else "GOLDEN^PATIENT^CORRECTED"
    files: dict[str, bytes | str] = {
        f"imaging/{PATIENT_ID}/cbct/slice{i:03d}.dcm": dicom_file(
            STUDY_UID, i, name, _bytes(f"slice{i}", 512)
        )
        for i in range(1, 5)
    }
    files["imaging/photos/intraoral.jpg"] = _bytes("photo", 40_000)
    dump = b"".join(
        f"INSERT INTO appointment VALUES ({i}, 'GOLDEN-{i:04d}', '2026-01-{1 + i % 28:02d}');\n"
        .encode()
        for i in range(1500)
    )
    files["practice/pms-dump.sql"] = dump if version == 1 else dump + b"-- day two\n"
    files["practice/latest-dump.sql"] = "pms-dump.sql"
    files["empty.txt"] = b""
    if version == 1:
        files["imaging/old-export.bin"] = _bytes("export", 20_000)
    else:
        files[f"imaging/{PATIENT_ID}/pan/pan001.dcm"] = dicom_file(
            SECOND_STUDY_UID, 1, name, _bytes("pan", 512)
        )
    return files


def write_inputs(root: Path, version: int) -> None:
    """Write the archive of backup `version` under `root` (which must not exist yet), every
    file 0644, every directory 0755, every mtime MTIME_NS."""
    root.mkdir(parents=True)
    made: set[Path] = {root}
    for rel, content in sorted(inputs(version).items()):
        path = root / rel
        for parent in reversed(path.parents):
            if parent not in made and root in parent.parents:
                parent.mkdir(exist_ok=True)
                made.add(parent)
        if isinstance(content, str):
            os.symlink(content, path)
            os.utime(path, ns=(MTIME_NS, MTIME_NS), follow_symlinks=False)
        else:
            path.write_bytes(content)
            path.chmod(0o644)
            os.utime(path, ns=(MTIME_NS, MTIME_NS))
    for directory in sorted(made, key=lambda p: -len(p.parts)):
        directory.chmod(0o755)
        os.utime(directory, ns=(MTIME_NS, MTIME_NS))
