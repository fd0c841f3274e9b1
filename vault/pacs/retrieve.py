"""Reading a PACS: which studies it holds (C-FIND), and fetching them with C-GET into a staging
directory with each data set's bytes as the PACS sent them.

C-GET sends the instances back on the association that asked for them, so vault proposes, for
every SOP class of the study (learnt from an image-level C-FIND), one presentation context per
transfer syntax it may be stored in: the PACS can then send each instance in its own syntax,
without transcoding. Each received data set is written as a DICOM file (a file meta group
naming the syntax it came in, then the data set bytes untouched) at a path the caller chooses
(keyed names, never a UID or a patient).
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from vault.pacs.connect import MAX_CONTEXTS, Context, PacsError, association
from vault.pacs.find import FIND_CONTEXT, PENDING, QUERY_SYNTAXES, find_on
from vault.policy.pacs import PacsEndpoint
from vault.storage.s3_settings import is_loopback

# The transfer syntaxes a PACS may hold an image in, most common first.
TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.4.70",  # JPEG lossless
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.5",  # RLE lossless
    "1.2.840.10008.1.2.1.99",  # deflated explicit VR little endian
    "1.2.840.10008.1.2.2",  # explicit VR big endian (retired, still found)
    "1.2.840.10008.1.2.4.51",  # JPEG extended
    "1.2.840.10008.1.2.4.57",  # JPEG lossless, non-hierarchical
)
PARTIAL = ".partial"  # a file being written: never backed up, replaced when complete
# What pynetdicom raises when an association went away between two requests, or the PACS
# accepted the association but not the service's context.
_DIMSE_ERRORS = (RuntimeError, ValueError, AttributeError)


@dataclass(frozen=True)
class RemoteStudy:
    study_uid: str
    study_date: str
    instances: int | None  # what the PACS says it holds (NumberOfStudyRelatedInstances)


@dataclass(frozen=True)
class RemoteInstance:
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str


@dataclass
class Fetched:
    files: int = 0
    bytes: int = 0
    failed: int = 0  # instances the PACS said it could not send
    problems: list[str] = field(default_factory=list)


def find_studies(endpoint: PacsEndpoint, since: str | None) -> list[RemoteStudy]:
    """Every study the PACS holds (on or after `since`, YYYYMMDD)."""
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    query.StudyDate = f"{since}-" if since else ""
    query.NumberOfStudyRelatedInstances = ""
    found = []
    for answer in _find(endpoint, query):
        uid = str(answer.get("StudyInstanceUID", "") or "")
        if not uid:
            continue
        count = answer.get("NumberOfStudyRelatedInstances")
        found.append(RemoteStudy(uid, str(answer.get("StudyDate", "") or ""),
                                 int(count) if count not in (None, "") else None))  # fmt: skip
    return found


def find_instances(endpoint: PacsEndpoint, study_uid: str) -> list[RemoteInstance]:
    """Every instance of a study: its series, SOP instance and SOP class."""
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = study_uid
    query.SeriesInstanceUID = ""
    query.SOPInstanceUID = ""
    query.SOPClassUID = ""
    return [
        RemoteInstance(str(a.SeriesInstanceUID), str(a.SOPInstanceUID), str(a.SOPClassUID))
        for a in _find(endpoint, query)
        if a.get("SOPInstanceUID") and a.get("SOPClassUID") and a.get("SeriesInstanceUID")
    ]


def fetch(
    endpoint: PacsEndpoint,
    study_uid: str,
    instances: list[RemoteInstance],
    path_of: Callable[[str], Path],
    *,
    whole: bool,
    on_file: Callable[[int], None] = lambda size: None,
) -> Fetched:
    """C-GET `instances` of the study into files at `path_of(SOP instance UID)`: in one
    request when they are the whole study (`whole`), else one request each."""
    result = Fetched()
    classes = sorted({i.sop_class_uid for i in instances})
    if not classes:
        return result
    per_class = max(1, min(len(TRANSFER_SYNTAXES), (MAX_CONTEXTS - 1) // len(classes)))
    contexts = [Context(str(StudyRootQueryRetrieveInformationModelGet), QUERY_SYNTAXES)]
    contexts += [Context(c, (ts,)) for c in classes for ts in TRANSFER_SYNTAXES[:per_class]]
    if len(contexts) > MAX_CONTEXTS:
        raise PacsError(
            f"PACS {endpoint.describe()}: a study with {len(classes)} SOP classes needs more "
            "presentation contexts than one association holds"
        )
    on_store = _writer(instances, path_of, result, on_file, whole=whole)
    roles = [build_role(c, scp_role=True) for c in classes]
    with association(endpoint, contexts, roles=roles,
                     handlers=[(evt.EVT_C_STORE, on_store)]) as assoc:  # fmt: skip
        for query in _requests(study_uid, instances, whole):
            try:
                for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
                    _count_status(endpoint, status, result, "C-GET")
            except _DIMSE_ERRORS:
                raise PacsError(
                    f"PACS {endpoint.describe()}: it does not offer C-GET here (for a PACS that "
                    'serves only C-MOVE, set retrieve = "move" in pacs.toml), or the '
                    "association broke"
                ) from None
    return result


def _writer(
    instances: list[RemoteInstance],
    path_of: Callable[[str], Path],
    result: Fetched,
    on_file: Callable[[int], None],
    *,
    whole: bool,
    allowed_from: set[str] | None = None,
) -> Callable[[Any], int]:
    """The C-STORE handler that writes each instance, as received, to its path: any instance
    of a whole study (one may have arrived since the C-FIND), else only those asked for."""
    wanted = {i.sop_instance_uid for i in instances}
    lock = threading.Lock()

    def on_store(event: Any) -> int:
        if allowed_from is not None and event.assoc.requestor.address not in allowed_from:
            return 0xC000  # a C-MOVE's images come from the PACS's address, or not at all
        uid = str(event.request.AffectedSOPInstanceUID)
        if not whole and uid not in wanted:
            return 0xC000  # not what was asked for: refused, never written
        target = path_of(uid)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = event.encoded_dataset()  # preamble, file meta, the data set bytes as received
        fd, partial = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=PARTIAL)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(partial, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise
        with lock:  # a storage SCP may take several associations at once
            result.files += 1
            result.bytes += len(data)
        on_file(len(data))
        return 0x0000

    return on_store


def fetch_by_move(
    endpoint: PacsEndpoint,
    study_uid: str,
    instances: list[RemoteInstance],
    path_of: Callable[[str], Path],
    *,
    whole: bool,
    on_file: Callable[[int], None] = lambda size: None,
) -> Fetched:
    """C-MOVE `instances` to vault's own storage SCP, listening on the endpoint's move_port
    for the time of the move and taking associations only from the PACS's AE title."""
    if endpoint.move_port is None:
        raise PacsError(f'PACS {endpoint.describe()}: retrieve = "move" needs move_port')
    result = Fetched()
    scp = AE(ae_title=endpoint.calling_ae_title)
    scp.require_calling_aet = [endpoint.ae_title]
    scp.network_timeout = scp.acse_timeout = scp.dimse_timeout = endpoint.timeout_seconds
    for sop_class in sorted({i.sop_class_uid for i in instances}):
        scp.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
    addresses = _addresses(endpoint.host)
    # Listening where the PACS can reach vault: on loopback for a PACS on this machine.
    bind = "127.0.0.1" if is_loopback(endpoint.host) else ""
    handler = _writer(instances, path_of, result, on_file, whole=whole, allowed_from=addresses)
    try:
        server = scp.start_server(
            (bind, endpoint.move_port), block=False, evt_handlers=[(evt.EVT_C_STORE, handler)]
        )
    except OSError as exc:
        raise PacsError(
            f"cannot listen on port {endpoint.move_port} for the PACS's C-MOVE: "
            f"{exc.strerror or exc}"
        ) from None
    try:
        context = Context(str(StudyRootQueryRetrieveInformationModelMove), QUERY_SYNTAXES)
        with association(endpoint, [context]) as assoc:
            for query in _requests(study_uid, instances, whole):
                try:
                    for status, _ in assoc.send_c_move(
                        query, endpoint.calling_ae_title, StudyRootQueryRetrieveInformationModelMove
                    ):
                        _count_status(endpoint, status, result, "C-MOVE")
                except _DIMSE_ERRORS:
                    raise PacsError(
                        f"PACS {endpoint.describe()}: it does not offer C-MOVE here, or the "
                        "association broke"
                    ) from None
    finally:
        if server is not None:
            server.shutdown()
    return result


def _count_status(endpoint: PacsEndpoint, status: Any, result: Fetched, what: str) -> None:
    code = getattr(status, "Status", None)
    if code is None:
        raise PacsError(f"PACS {endpoint.describe()}: the association broke during {what}")
    if code in PENDING:
        return
    failed = int(getattr(status, "NumberOfFailedSuboperations", 0) or 0)
    result.failed += failed
    completed = int(getattr(status, "NumberOfCompletedSuboperations", 0) or 0)
    if what == "C-MOVE" and code in (0xA801, 0xC000) and not completed and not failed:
        # 0xA801 says so; many PACS (Orthanc) answer 0xC000 for the same.
        result.problems.append(
            f"{what} refused before anything was sent (status 0x{code:04X}): the PACS must know "
            f"vault's AE title {endpoint.calling_ae_title!r} as a move destination, with this "
            f"machine's address and port {endpoint.move_port}"
        )
    elif code not in (0x0000, 0xB000) or failed:
        result.problems.append(
            f"{what} answered status 0x{code:04X}: {failed} instance(s) not sent"
        )


def _addresses(host: str) -> set[str]:
    """The addresses `host` resolves to: a C-MOVE's images must come from one of them."""
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except OSError:
        return {host}


def _requests(study_uid: str, instances: list[RemoteInstance], whole: bool) -> list[Dataset]:
    """One study-level request for a whole study, else one per instance."""
    return [_get_query(study_uid, None)] if whole else [_get_query(study_uid, i) for i in instances]


def _get_query(study_uid: str, instance: RemoteInstance | None) -> Dataset:
    query = Dataset()
    query.StudyInstanceUID = study_uid
    if instance is None:
        query.QueryRetrieveLevel = "STUDY"
    else:
        query.QueryRetrieveLevel = "IMAGE"
        query.SeriesInstanceUID = instance.series_uid
        query.SOPInstanceUID = instance.sop_instance_uid
    return query


def _find(endpoint: PacsEndpoint, query: Dataset) -> list[Dataset]:
    with association(endpoint, [FIND_CONTEXT]) as assoc:
        return find_on(assoc, query)
