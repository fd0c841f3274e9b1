"""A fast path for the catalog: the eight study attributes from a plain DICOM header, without
building a pydicom Dataset.

Profiling a 3 GB CBCT backup showed pydicom's header parsing holding the GIL for half the run
(~0.4 ms a file, 12,000 files), starving the compression threads (docs/benchmarks.md). Nearly
every file a modality writes is simple: explicit or implicit VR little endian, the wanted
elements at top level before any undefined-length sequence, ASCII, Latin-1 or UTF-8 text. This
scanner walks such headers element by element and stops after StudyInstanceUID (0020,000D).
Anything else — DICOMDIR, big endian, deflate, an undefined length before the last wanted tag,
other character sets, multi-valued or oddly padded values, a missing StudyInstanceUID —
returns None, and the caller parses with pydicom as before. Tests check that whenever this
answers, it answers exactly what pydicom does.
"""

from __future__ import annotations

import struct

_TAG = struct.Struct("<HH")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_PREAMBLE_END = 132  # 128-byte preamble + "DICM"
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}

_WANTED = {
    0x00080005: "charset",
    0x00080020: "study_date",
    0x00080050: "accession",
    0x00080060: "modality",
    0x00081030: "description",
    0x00100010: "patient_name",
    0x00100020: "patient_id",
    0x00100030: "birth_date",
    0x0020000D: "study_uid",
}
_LAST = 0x0020000D
_DICOMDIR = b"1.2.840.10008.1.3.10"
_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
# Encapsulated (compressed) pixel data keeps an explicit VR little endian header.
_ENCAPSULATED = ("1.2.840.10008.1.2.4.", "1.2.840.10008.1.2.5")
_CHARSETS = {b"": "ascii", b"ISO_IR 6": "ascii", b"ISO_IR 100": "latin_1", b"ISO_IR 192": "utf_8"}


def _element(head: bytes, pos: int, explicit: bool) -> tuple[int, int, int] | None:
    """(tag, value offset, value length) of the element at pos, or None past the end."""
    if pos + 8 > len(head):
        return None
    group, elem = _TAG.unpack_from(head, pos)
    if not explicit:
        return group << 16 | elem, pos + 8, _U32.unpack_from(head, pos + 4)[0]
    if head[pos + 4 : pos + 6] in _LONG_VRS:
        if pos + 12 > len(head):
            return None
        return group << 16 | elem, pos + 12, _U32.unpack_from(head, pos + 8)[0]
    return group << 16 | elem, pos + 8, _U16.unpack_from(head, pos + 6)[0]


def _transfer_syntax(head: bytes) -> tuple[str, int] | None:
    """The transfer syntax from the file meta group, and where the dataset starts."""
    pos, syntax = _PREAMBLE_END, None
    while (found := _element(head, pos, explicit=True)) is not None:
        tag, at, length = found
        if tag >> 16 != 0x0002:
            break
        if length == _UNDEFINED or at + length > len(head):
            return None
        value = head[at : at + length].rstrip(b"\0 ")
        if tag == 0x00020002 and value == _DICOMDIR:
            return None
        if tag == 0x00020010:
            syntax = value.decode("ascii", "replace")
        pos = at + length
    return (syntax, pos) if syntax else None


def _text(raw: bytes, encoding: str, uid: bool) -> str | None:
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError:
        return None
    text = text.rstrip("\0 ") if uid else text.rstrip(" ")
    if "\\" in text or "\0" in text or text != text.lstrip(" ") or any(c in text for c in "\r\n"):
        return None  # multi-valued or unusual padding: pydicom decides
    return text


def scan(head: bytes) -> dict[str, str] | None:
    """The study attributes, or None when pydicom must parse this header."""
    meta = _transfer_syntax(head)
    if meta is None:
        return None
    syntax, pos = meta
    if syntax == _IMPLICIT_LE:
        explicit = False
    elif syntax == _EXPLICIT_LE or syntax.startswith(_ENCAPSULATED):
        explicit = True
    else:
        return None
    raw: dict[str, bytes] = {}
    while True:
        found = _element(head, pos, explicit)
        if found is None:
            return None  # the header ended before StudyInstanceUID
        tag, at, length = found
        if tag > _LAST:
            break
        if length == _UNDEFINED or at + length > len(head):
            return None
        if tag in _WANTED:
            raw[_WANTED[tag]] = head[at : at + length]
        if tag == _LAST:
            break
        pos = at + length
    encoding = _CHARSETS.get(raw.pop("charset", b"").strip(b" "))
    if encoding is None:
        return None
    values: dict[str, str] = {}
    for name, value in raw.items():
        text = _text(value, encoding, uid=name == "study_uid")
        if text is None:
            return None
        values[name] = text
    return values if values.get("study_uid") else None
