"""C-STORE: DICOM files sent to a PACS exactly as they are, and what the PACS said of each.

The data set goes over the wire as the file holds it, after its file meta group (pynetdicom
reads it from the file in pieces, never decoding it): no transcoding, so the PACS receives the
bytes that were backed up, in the transfer syntax they were written in. The file meta group
itself is not sent; by PS3.10 the receiver writes its own. Presentation contexts are proposed
from the files' own SOP classes and transfer syntaxes, one per pair, at most 128 an
association (more pairs: more associations).

A connection that drops mid-study, a PACS that restarts, or an "out of resources" status is
retried: the association is opened again and only the instances not yet stored are sent, a
few times with a growing pause while nothing goes through. A failure status is final for its
instance. Instances are named by the caller's labels (catalog ids), never by a UID or a path.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.uid import UID
from pynetdicom import _config
from pynetdicom.dsutils import split_dataset

from vault.pacs.connect import (
    MAX_CONTEXTS,
    Context,
    NoContextAccepted,
    PacsError,
    open_association,
)
from vault.policy.pacs import PacsEndpoint
from vault.progress import NoProgress, Progress

# Send each data set from its file in pieces, as stored (no decoding, no re-encoding).
_config.STORE_SEND_CHUNKED_DATASET = True

RETRIES = 3  # times in a row an association may break with nothing stored in between
_PAUSE_SECONDS = 1.0  # before the first retry; doubled each time


@dataclass(frozen=True)
class Instance:
    label: str  # how reports name it (catalog id and number): never a UID or a path
    path: Path
    sop_class: str
    transfer_syntax: str
    size: int

    @property
    def context(self) -> tuple[str, str]:
        return self.sop_class, self.transfer_syntax


def read_instance(path: Path, label: str) -> Instance | str:
    """The instance in the DICOM file at `path`, or why it cannot be sent as it is."""
    try:
        meta, _ = split_dataset(path)
    except Exception:
        return "not a DICOM file with a file meta group (sent only as stored, never re-encoded)"
    if not meta:
        return (
            "not a DICOM file with a file meta group (a bare data set, as older systems wrote "
            "them): vault sends files only as stored, never re-encoded"
        )
    sop_class = str(meta.get("MediaStorageSOPClassUID", "") or "")
    syntax = str(meta.get("TransferSyntaxUID", "") or "")
    if not sop_class or not syntax or "MediaStorageSOPInstanceUID" not in meta:
        return "its file meta group lacks the SOP class, instance or transfer syntax"
    if sop_class == "1.2.840.10008.1.3.10":  # Media Storage Directory Storage
        return "a DICOMDIR is a file-set index, not an image a PACS stores"
    return Instance(label, path, sop_class, syntax, path.stat().st_size)


@dataclass
class StoreResult:
    stored: list[str] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # stored, with a warning
    failures: list[tuple[str, str]] = field(default_factory=list)
    # Of the failures, those that only found the PACS away or busy (worth one more try).
    unsent: set[str] = field(default_factory=set)
    busy: set[str] = field(default_factory=set)  # answered "out of resources" last time
    busy_why: str = ""
    bytes_sent: int = 0
    associations: int = 0
    retries: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures


def name_of(uid: str) -> str:
    """A SOP class or transfer syntax by its name (these UIDs are the standard's, not a
    patient's)."""
    return UID(uid).name or uid


def store(
    endpoint: PacsEndpoint,
    instances: Sequence[Instance],
    progress: Progress | None = None,
    *,
    pause: Callable[[float], None] = time.sleep,
) -> StoreResult:
    progress = progress or NoProgress()
    result = StoreResult()
    started = time.monotonic()
    stop = threading.Event()  # set on Ctrl-C: the other associations stop between instances
    progress.start(f"send to {endpoint.name}", sum(i.size for i in instances))
    try:
        workers = max(1, min(endpoint.associations, len(instances)))
        _merge(result, _in_parallel(endpoint, instances, workers, progress, pause, stop))
        # A PACS that takes fewer associations at once than asked refuses the extra ones (as
        # busy): what they could not send goes again, over one.
        if workers > 1 and result.unsent:
            again = [i for i in instances if i.label in result.unsent]
            result.failures = [f for f in result.failures if f[0] not in result.unsent]
            result.unsent = set()
            _merge(result, _in_parallel(endpoint, again, 1, progress, pause, stop))
    finally:
        progress.finish()
        result.seconds = time.monotonic() - started
    return result


def _in_parallel(
    endpoint: PacsEndpoint,
    instances: Sequence[Instance],
    workers: int,
    progress: Progress,
    pause: Callable[[float], None],
    stop: threading.Event,
) -> list[StoreResult]:
    """Each of `workers` associations sends every workers-th instance (a PACS stores the
    instances of several associations at once: two took a 600-slice study into Orthanc in
    3.2 s instead of 5.0-5.7)."""
    parts = [StoreResult() for _ in range(workers)]
    if workers == 1:
        _send_all(endpoint, list(instances), parts[0], progress, pause, stop)
        return parts
    errors: list[BaseException] = []

    def work(number: int) -> None:
        try:
            _send_all(endpoint, list(instances[number::workers]), parts[number], progress,
                      pause, stop)  # fmt: skip
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=work, args=(n,), name=f"c-store-{n}")
               for n in range(workers)]  # fmt: skip
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    except BaseException:
        stop.set()  # Ctrl-C here: the senders finish the instance in hand and stop
        for thread in threads:
            if thread.is_alive():
                thread.join()
        raise
    if errors:
        raise errors[0]
    return parts


def _merge(into: StoreResult, parts: list[StoreResult]) -> None:
    for part in parts:
        into.stored += part.stored
        into.warnings += part.warnings
        into.failures += part.failures
        into.bytes_sent += part.bytes_sent
        into.associations += part.associations
        into.retries += part.retries
        into.unsent |= part.unsent


def _send_all(
    endpoint: PacsEndpoint,
    pending: list[Instance],
    result: StoreResult,
    progress: Progress,
    pause: Callable[[float], None],
    stop: threading.Event,
) -> None:
    """Send `pending` over one association at a time, opening another when one breaks."""
    broken = 0  # attempts in a row that stored nothing
    why = "the association broke before the PACS answered"
    while pending:
        try:
            remaining = _send_batch(endpoint, _batch(pending), pending, result, progress, stop)
        except PacsError as exc:
            if exc.permanent:
                result.failures.extend((i.label, f"not sent: {exc}") for i in pending)
                return
            remaining, why = pending, str(exc)
        if stop.is_set():
            return  # the caller is unwinding (Ctrl-C, or another sender's error)
        progressed = len(remaining) < len(pending)
        busy = [i for i in remaining if i.label in result.busy]
        if busy and len(busy) == len(remaining):
            why = result.busy_why  # only "out of resources" left
        pending = remaining
        if not pending or (progressed and not busy):
            broken = 0
            continue
        broken += 1
        if broken > RETRIES:
            result.failures.extend((i.label, f"not sent: {why}") for i in pending)
            result.unsent |= {i.label for i in pending}
            return
        result.retries += 1
        pause(_PAUSE_SECONDS * 2 ** (broken - 1))


def _batch(pending: list[Instance]) -> list[Instance]:
    """The pending instances whose contexts fit one association, in order."""
    contexts: set[tuple[str, str]] = set()
    batch = []
    for instance in pending:
        if instance.context not in contexts and len(contexts) == MAX_CONTEXTS:
            continue
        contexts.add(instance.context)
        batch.append(instance)
    return batch


def _send_batch(
    endpoint: PacsEndpoint,
    batch: list[Instance],
    pending: list[Instance],
    result: StoreResult,
    progress: Progress,
    stop: threading.Event,
) -> list[Instance]:
    """Send `batch` on one association; returns what is still pending afterwards."""
    contexts = sorted({i.context for i in batch})
    done: set[str] = set()
    try:
        assoc = open_association(endpoint, [Context(c, (t,)) for c, t in contexts])
    except NoContextAccepted:
        for instance in batch:  # it takes none of these: each is named, none is retried
            result.failures.append((instance.label, _not_accepted(instance)))
            progress.advance(instance.size)
        return [i for i in pending if i not in batch]
    result.associations += 1
    try:
        accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
        for instance in batch:
            if stop.is_set():
                break
            if instance.context not in accepted:
                result.failures.append((instance.label, _not_accepted(instance)))
                done.add(instance.label)
                progress.advance(instance.size)
                continue
            try:
                status = assoc.send_c_store(instance.path)
            except OSError as exc:  # the staged file went away or cannot be read
                result.failures.append((instance.label, f"cannot read it: {exc.strerror}"))
                done.add(instance.label)
                continue
            except (RuntimeError, ValueError, AttributeError):
                break  # pynetdicom: the association went away between two instances
            code = getattr(status, "Status", None)
            if code is None or not assoc.is_established:
                break  # the association broke: what is not done is sent again on a new one
            if 0xA700 <= code <= 0xA7FF:
                # Out of resources: retried later, on another association, after a pause.
                result.busy.add(instance.label)
                result.busy_why = _status_text(code)
                continue
            result.busy.discard(instance.label)
            done.add(instance.label)
            progress.advance(instance.size)
            if code == 0x0000 or code in (0x0107, 0x0116) or 0xB000 <= code <= 0xBFFF:
                result.stored.append(instance.label)
                result.bytes_sent += instance.size
                if code != 0x0000:
                    result.warnings.append((instance.label, _status_text(code)))
            else:
                result.failures.append((instance.label, _status_text(code)))
    finally:
        if assoc.is_established:
            assoc.release()
    return [i for i in pending if i.label not in done]


def _not_accepted(instance: Instance) -> str:
    return (
        f"the PACS does not accept {name_of(instance.sop_class)} in "
        f"{name_of(instance.transfer_syntax)}"
    )


_STATUS = {
    0x0117: "the PACS says the instance is invalid",
    0x0122: "the PACS does not support the SOP class",
    0x0124: "the PACS refused it: not authorised",
    0x0210: "duplicate invocation",
    0x0211: "the PACS does not recognise the operation",
    0x0212: "mistyped argument",
    0xB000: "stored, but the PACS coerced some data elements",
    0xB006: "stored, but the PACS discarded some data elements",
    0xB007: "stored, but the PACS says the data set does not match its SOP class",
}
_STATUS_OUT_OF_RESOURCES = "the PACS is out of resources"


def _status_text(code: int) -> str:
    if code in _STATUS:
        return f"{_STATUS[code]} (status 0x{code:04X})"
    if 0xA700 <= code <= 0xA7FF:
        return f"{_STATUS_OUT_OF_RESOURCES} (status 0x{code:04X})"
    if 0xA900 <= code <= 0xA9FF:
        return f"the PACS says the data set does not match its SOP class (status 0x{code:04X})"
    if 0xC000 <= code <= 0xCFFF:
        return f"the PACS cannot understand the data set (status 0x{code:04X})"
    return f"the PACS answered status 0x{code:04X}"
