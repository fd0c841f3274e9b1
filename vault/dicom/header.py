"""Reading what a DICOM file says about its study, from the bytes a backup reads anyway.

The backup feeds every block of a file to a HeaderCollector as it reads it. The collector keeps
only what the header needs and parses as soon as it has enough: the elements up to
StudyInstanceUID (0020,000D), which every study attribute precedes in tag order; a DICOMDIR's
whole directory record sequence; for the Deflated transfer syntax, the data set inflated as a
stream, never the whole file at once. Nothing is cut at a fixed size, so a long header (an
enhanced multi-frame object, a CBCT CD's DICOMDIR) parses whole or, past MAX_HEADER_BYTES,
is reported as too long.

Recognised as DICOM: the 128-byte preamble and "DICM"; a file meta group without preamble; a
bare data set (no meta group, as older systems wrote them) in implicit or explicit VR, little
or big endian. Only files with the DICM marker are reported when they do not parse: a file
merely starting like a bare data set is not claimed to be DICOM unless it parses as one.

Parsing never raises past this module and never prints: any failure, of any kind, becomes an
Unparseable with a reason that names no value from the file. This module is the home of pydicom
for reading headers.
"""

from __future__ import annotations

import functools
import io
import logging
import struct
import warnings
import zlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from vault.dicom.scan import scan

DICM_OFFSET = 128
# More than any header needs: a DICOMDIR of a CBCT CD is a few MiB, an enhanced multi-frame
# header with per-frame groups for thousands of frames a few more (only the part before
# StudyInstanceUID is read). Memory per file in flight stays bounded by this (a Deflated data
# set is inflated into at most this much, never handed to pydicom whole).
MAX_HEADER_BYTES = 64 * 1024 * 1024
# A file that only starts like a bare data set is given less room before it is taken for
# something else: most files are not DICOM, and a guess must not hold 64 MiB per file.
MAX_BARE_BYTES = 4 * 1024 * 1024
_STUDY_UID = 0x0020000D
_DEFLATED = "1.2.840.10008.1.2.1.99"
_MEDIA_DICOMDIR = "1.2.840.10008.1.3.10"
_EXPLICIT_VRS = {
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"OB",
    b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM",
    b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
}  # fmt: skip
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
             b"UV"}  # fmt: skip


@functools.cache
def _pydicom() -> ModuleType:
    """pydicom, imported on first use: most headers never need it (vault.dicom.scan), and its
    import (with numpy when installed) costs more than a nightly backup's whole walk."""
    import pydicom
    import pydicom.config
    import pydicom.filereader
    import pydicom.multival

    # Reading a header must never print: pydicom's validation warnings quote element values,
    # and those can be patient identifiers. Values are taken as they are; nothing validates.
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    return pydicom


@dataclass(frozen=True)
class FileHeader:
    """What one DICOM file says about its study (or, for a DICOMDIR, the studies it lists)."""

    study_uid: str = ""
    patient_id: str = ""
    patient_name: str = ""
    birth_date: str = ""
    study_date: str = ""
    modality: str = ""
    accession: str = ""
    description: str = ""
    dicomdir_studies: tuple[str, ...] = ()
    is_dicomdir: bool = False
    dicomdir_files: int = 0  # records naming a file (ReferencedFileID): all must come back


@dataclass(frozen=True)
class Unparseable:
    """A file with the DICM marker whose header cannot be read; `reason` names no value."""

    reason: str


def looks_like_dicom(head: bytes) -> bool:
    return len(head) >= DICM_OFFSET + 4 and head[DICM_OFFSET : DICM_OFFSET + 4] == b"DICM"


def _bare_start(head: bytes) -> bool:
    """Whether `head` may begin a DICOM stream without preamble: a meta group, or a bare data
    set whose first element is in group 0002 or 0008 (either byte order)."""
    if len(head) < 8:
        return False
    group_le, elem_le = struct.unpack_from("<HH", head)
    group_be = struct.unpack_from(">H", head)[0]
    explicit = head[4:6] in _EXPLICIT_VRS
    if group_le in (0x0002, 0x0008) and elem_le < 0x1000:
        return explicit or struct.unpack_from("<I", head, 4)[0] < 0x10000
    return group_be == 0x0008 and explicit


def normalise_date(value: str) -> str:
    """A DA value as YYYYMMDD: the old dotted form (1994.11.05, ACR-NEMA) and dashes are
    accepted; anything else is kept as written (and compares as it is)."""
    text = value.strip()
    compact = text.replace(".", "").replace("-", "")
    if len(compact) == 8 and compact.isascii() and compact.isdigit() and len(text) in (8, 10):
        return compact
    return text


def normalise_name(value: str) -> str:
    """A person name as pydicom decodes it, without the empty trailing component groups that
    multi-byte character sets leave ("WANG^XIAODONG=王^小东=" ends in "=")."""
    groups = value.split("=")
    while len(groups) > 1 and not groups[-1].strip():
        groups.pop()
    return "=".join(g.rstrip() for g in groups)


class HeaderCollector:
    """Fed each block of one file in order; `result()` after the last block."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._kind = ""  # "" undecided, "marked", "bare", "none", "done"
        self._result: FileHeader | Unparseable | None = None
        self._inflater: Any = None
        self._dataset_start = 0
        self._inflated = bytearray()
        self._too_long = False
        # Parse attempts at doubling sizes: a header that needs many blocks (a large DICOMDIR)
        # costs a few parses, not one per block.
        self._next_attempt = 0
        self._head = b""  # a first read shorter than the preamble waits for the next
        self._meta_known = False  # the file meta group was read, or there is none

    @property
    def wants_more(self) -> bool:
        return self._kind in ("", "marked", "bare")

    def feed(self, block: bytes) -> None:
        if self._kind == "":
            self._head += block
            if len(self._head) >= DICM_OFFSET + 4 or not block:
                head, self._head = self._head, b""
                self._start(head)
            return
        if not self.wants_more:
            return
        self._append(block)
        held = len(self._inflated) if self._inflater is not None else len(self._buffer)
        if held >= self._next_attempt:
            self._next_attempt = 2 * held
            self._attempt(complete=False)

    def result(self) -> FileHeader | Unparseable | None:
        """The header, Unparseable for a DICOM-marked file that does not parse, or None for a
        file that is not DICOM. Call once the whole file was fed."""
        if self._kind == "":
            head, self._head = self._head, b""
            self._start(head)
        if self.wants_more:
            self._attempt(complete=not self._too_long)
            if self.wants_more:  # more was needed than MAX_HEADER_BYTES
                self._finish(
                    Unparseable(
                        f"its header is longer than {MAX_HEADER_BYTES // (1024 * 1024)} MiB"
                    )
                    if self._kind == "marked"
                    else None
                )
        return self._result

    # -- internals ------------------------------------------------------------------------

    def _start(self, block: bytes) -> None:
        if looks_like_dicom(block):
            fast = _fast(block)
            if fast is not None:
                self._finish(fast)
                return
            self._kind = "marked"
        elif _bare_start(block):
            self._kind = "bare"
        else:
            self._kind = "none"
            return
        self._append(block)
        self._next_attempt = 2 * max(len(self._buffer), len(self._inflated))
        self._attempt(complete=False)

    def _append(self, block: bytes) -> None:
        if self._inflater is not None:
            self._inflate(block)
            return
        cap = MAX_HEADER_BYTES if self._kind == "marked" else MAX_BARE_BYTES
        room = cap - len(self._buffer)
        if len(block) > room:
            self._too_long = True
        self._buffer += block[: max(room, 0)]
        if not self._meta_known:
            self._read_meta()

    def _read_meta(self) -> None:
        """Find the file meta group (after the preamble, or at the start of a file without
        one) and, for the Deflated transfer syntax, switch to inflating what follows."""
        start = DICM_OFFSET + 4 if self._kind == "marked" else 0
        data = bytes(self._buffer)
        if len(data) >= start + 4 and struct.unpack_from("<H", data, start)[0] != 0x0002:
            self._meta_known = True  # no meta group: a bare data set
            return
        meta = _meta_group(data, start)
        if meta is None:
            return  # not all of it here yet
        self._meta_known = True
        syntax, end = meta
        self._dataset_start = end
        if syntax == _DEFLATED:
            self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            tail = bytes(self._buffer[end:])
            del self._buffer[end:]
            self._inflate(tail)

    def _inflate(self, data: bytes) -> None:
        room = MAX_HEADER_BYTES - len(self._inflated)
        if room <= 0:
            self._too_long = True
            return
        try:
            self._inflated += self._inflater.decompress(data, room)
        except zlib.error:
            self._finish(Unparseable("its deflated data set is corrupt"))
            return
        if self._inflater.unconsumed_tail:
            self._too_long = True

    def _attempt(self, *, complete: bool) -> None:
        if self._inflater is not None:
            found = _parse_inflated(bytes(self._inflated), complete=complete)
        elif not self._meta_known:
            # pydicom must never meet a Deflated data set whose meta group vault could not
            # read: it would inflate the whole stream at once (a few KiB can inflate to GiB).
            if not complete:
                return
            found = Unparseable("its file meta group cannot be read")
        elif self._buffer[self._dataset_start : self._dataset_start + 4] == b"\0\0\0\0":
            # A (0000,0000) element where the data set should start: pydicom would read a run
            # of zero bytes as millions of command elements. No file holds that.
            found = Unparseable("its data set is corrupt (zero bytes where elements should be)")
        else:
            found = _parse(bytes(self._buffer), complete=complete)
        if found is None:
            return  # more bytes may finish it
        if isinstance(found, Unparseable) and self._kind == "bare":
            self._finish(None)  # it only looked like a bare data set
            return
        self._finish(found)

    def _finish(self, result: FileHeader | Unparseable | None) -> None:
        self._result = result
        self._kind = "done"
        self._buffer = bytearray()
        self._inflated = bytearray()
        self._inflater = None


def _fast(block: bytes) -> FileHeader | None:
    fast = scan(block)
    if fast is None:
        return None
    return FileHeader(
        study_uid=fast["study_uid"],
        patient_id=fast.get("patient_id", ""),
        patient_name=normalise_name(fast.get("patient_name", "")),
        birth_date=normalise_date(fast.get("birth_date", "")),
        study_date=normalise_date(fast.get("study_date", "")),
        modality=fast.get("modality", ""),
        accession=fast.get("accession", ""),
        description=fast.get("description", ""),
    )


def _meta_group(head: bytes, pos: int) -> tuple[str, int] | None:
    """(transfer syntax, end of the file meta group) from explicit VR little endian group 0002
    elements starting at `pos`; None until `head` holds all of the group. The group's end is
    its declared length (0002,0000) when given, else the first element of another group."""
    syntax = ""
    group_end: int | None = None
    while True:
        if group_end is not None and pos >= group_end:
            break
        if pos + 8 > len(head):
            return None  # the group may go on in bytes not read yet
        group, elem = struct.unpack_from("<HH", head, pos)
        if group != 0x0002:
            break
        vr = head[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > len(head):
                return None
            length, at = struct.unpack_from("<I", head, pos + 8)[0], pos + 12
        else:
            length, at = struct.unpack_from("<H", head, pos + 6)[0], pos + 8
        if length == 0xFFFFFFFF or at + length > len(head):
            return None
        if elem == 0x0000 and length == 4 and group_end is None:
            group_end = at + 4 + struct.unpack_from("<I", head, at)[0]
        if elem == 0x0010:
            syntax = head[at : at + length].rstrip(b"\0 ").decode("ascii", "replace")
        pos = at + length
    return (syntax, pos) if syntax else None


class _Stopped:
    """stop_when for pydicom: remembers that the parse went past StudyInstanceUID, which proves
    every element before it was read whole."""

    def __init__(self) -> None:
        self.reached = False
        self.disordered = False  # a zero tag in the data set: corrupt, stop at once

    def __call__(self, tag: Any, vr: Any, length: int) -> bool:
        number = int(tag)
        if number == 0:
            # Runs of zero bytes read as endless (0000,0000) elements: nothing more is worth
            # parsing. (Tags out of order are tolerated: real files have them.)
            self.disordered = True
            return True
        if number > _STUDY_UID:
            self.reached = True
            return True
        return False


def _parse(data: bytes, *, complete: bool) -> FileHeader | Unparseable | None:
    """Parse a header from the file's first bytes; None when more bytes may be needed."""
    pydicom = _pydicom()
    stop = _Stopped()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.filereader.read_partial(io.BytesIO(data), stop_when=stop, force=True)
            header = _from_dataset(ds, media_dicomdir=_is_dicomdir_meta(ds))
    except Exception as exc:  # any failure of a parser on hostile bytes
        return _unparseable(exc) if complete else None
    return _judged(header, stop, complete)


def _parse_inflated(data: bytes, *, complete: bool) -> FileHeader | Unparseable | None:
    if data[:4] == b"\0\0\0\0":
        return Unparseable("its data set is corrupt (zero bytes where elements should be)")
    pydicom = _pydicom()
    stop = _Stopped()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.filereader.read_dataset(
                io.BytesIO(data), is_implicit_VR=False, is_little_endian=True, stop_when=stop
            )
            header = _from_dataset(ds, media_dicomdir=False)
    except Exception as exc:  # any failure of a parser on hostile bytes
        return _unparseable(exc) if complete else None
    return _judged(header, stop, complete)


def _judged(
    header: FileHeader | Unparseable, stop: _Stopped, complete: bool
) -> FileHeader | Unparseable | None:
    # Parsed only up to a cut: what was read may end inside an element. Trust it once the
    # parse passed StudyInstanceUID, or the bytes are the whole file.
    if stop.disordered and not stop.reached:
        return Unparseable("its data set is corrupt (zero bytes where elements should be)")
    if not complete and not stop.reached:
        return None
    return header


def _is_dicomdir_meta(ds: Any) -> bool:
    meta = getattr(ds, "file_meta", None)
    if not meta:
        return False
    return str(meta.get("MediaStorageSOPClassUID", "")) == _MEDIA_DICOMDIR


def _text(ds: Any, keyword: str) -> str:
    value = ds.get(keyword, "")
    if value is None:
        return ""
    if isinstance(value, _pydicom().multival.MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value)


def _from_dataset(ds: Any, *, media_dicomdir: bool) -> FileHeader | Unparseable:
    if "DirectoryRecordSequence" in ds or media_dicomdir:
        uids = sorted(
            {
                str(rec.get("StudyInstanceUID", ""))
                for rec in ds.get("DirectoryRecordSequence", [])
                if rec.get("DirectoryRecordType") == "STUDY" and rec.get("StudyInstanceUID")
            }
        )
        files = sum(1 for rec in ds.get("DirectoryRecordSequence", []) if "ReferencedFileID" in rec)
        return FileHeader(dicomdir_studies=tuple(uids), is_dicomdir=True, dicomdir_files=files)
    # Judged on the raw element, before reading its value converts it: a file cut inside the
    # UID holds fewer bytes than the element declares, and "1.2." is no study.
    raw = ds.get_item(0x0020000D) if 0x0020000D in ds else None
    declared = getattr(raw, "length", None)
    stored = getattr(raw, "value", None)
    if isinstance(stored, bytes) and isinstance(declared, int) and len(stored) < declared:
        return Unparseable("its header is cut short (inside StudyInstanceUID)")
    uid = _text(ds, "StudyInstanceUID").strip("\0 ")
    if not uid:
        return Unparseable("it has no StudyInstanceUID")
    return FileHeader(
        study_uid=uid,
        patient_id=_text(ds, "PatientID"),
        patient_name=normalise_name(_text(ds, "PatientName")),
        birth_date=normalise_date(_text(ds, "PatientBirthDate")),
        study_date=normalise_date(_text(ds, "StudyDate")),
        modality=_text(ds, "Modality"),
        accession=_text(ds, "AccessionNumber"),
        description=_text(ds, "StudyDescription"),
    )


def _unparseable(exc: BaseException) -> Unparseable:
    # The exception's text can quote bytes of the file: only its class is kept.
    return Unparseable(f"its header cannot be parsed ({exc.__class__.__name__})")


def read_header(data: bytes) -> FileHeader | Unparseable | None:
    """The header of a whole file (or its first bytes) held in memory, as the backup would
    catalogue it."""
    collector = HeaderCollector()
    view = memoryview(data)
    for start in range(0, max(len(data), 1), 2 * 1024 * 1024):
        collector.feed(bytes(view[start : start + 2 * 1024 * 1024]))
        if not collector.wants_more:
            break
    return collector.result()


def parse_with_pydicom(data: bytes) -> FileHeader | Unparseable:
    """The general path alone (the fast path's oracle in tests): `data` is the whole file."""
    found = _parse(data, complete=True)
    assert found is not None  # complete parses always decide
    return found
