"""Opening an association with a PACS, and saying in one sentence why one did not open.

pynetdicom reports a failed association as a flag; what went wrong is in its log. vault keeps
pynetdicom's log silent (at debug level it prints data sets, which hold patient data) and
works out the reason itself: a rejection carries the PACS's own reason (an AE title it does not
know, most often); otherwise a plain TCP connection and, for TLS, a handshake tell a port
nobody listens on from a host that does not answer and from a certificate that does not verify.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pydicom import config as pydicom_config
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association

from vault.errors import VaultError
from vault.policy.pacs import PacsEndpoint

# Debug output of pynetdicom dumps whole data sets; warnings name SOP Instance UIDs. Neither
# may reach a log or a terminal (patient identifiers), so its logger says nothing.
logging.getLogger("pynetdicom").setLevel(logging.CRITICAL + 1)
logging.getLogger("pynetdicom").propagate = False
# Nor are its standard event handlers bound: they decode every PDU sent for that log, about a
# tenth of the time of sending a study.
_config.LOG_HANDLER_LEVEL = "none"
# pydicom warns about a non-conformant value by quoting it, and a UID is a patient identifier:
# values are read as they are, without a word.
pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE

MAX_CONTEXTS = 128  # presentation contexts one association may propose (PS3.8 9.3.2.2)
_CONNECT_TIMEOUT_SECONDS = 10.0

# A-ASSOCIATE-RJ diagnostics from the service user (PS3.8 9.3.4), in words a practice admin
# can act on.
_REJECT_REASONS = {
    2: "it does not support the application context",
    3: "it does not know vault's calling AE title {calling!r} (add it to the PACS's list of "
    "known modalities / AE titles)",
    7: "its AE title is not {called!r} (check ae_title in pacs.toml against the PACS's own)",
}


class PacsError(VaultError):
    """The PACS could not be reached, refused the association, or failed a request.
    `permanent`: asking again will not help (an AE title it does not know, a certificate that
    does not verify); otherwise the PACS may be back in a moment (restarting, busy)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class NoContextAccepted(PacsError):
    """The PACS accepted the association but none of the presentation contexts proposed (it
    stores none of those SOP classes in those transfer syntaxes); pynetdicom then aborts."""


@dataclass(frozen=True)
class Context:
    """One presentation context to propose: a SOP class and the transfer syntaxes offered."""

    sop_class: str
    transfer_syntaxes: tuple[str, ...]


def tls_context(endpoint: PacsEndpoint) -> ssl.SSLContext | None:
    tls = endpoint.tls
    if tls is None:
        return None
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2  # SP 800-52r2
        if not tls.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if tls.cert_file:
            context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise PacsError(
            f"PACS {endpoint.name}: cannot load its TLS files (ca_file, cert_file, key_file): "
            f"{getattr(exc, 'strerror', None) or exc}",
            permanent=True,
        ) from None
    return context


@contextmanager
def association(
    endpoint: PacsEndpoint,
    contexts: Sequence[Context],
    *,
    roles: Sequence[Any] = (),
    handlers: Sequence[tuple[Any, Any]] = (),
) -> Iterator[Association]:
    """open_association, released on leaving (if it is still up)."""
    assoc = open_association(endpoint, contexts, roles=roles, handlers=handlers)
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def open_association(
    endpoint: PacsEndpoint,
    contexts: Sequence[Context],
    *,
    roles: Sequence[Any] = (),
    handlers: Sequence[tuple[Any, Any]] = (),
) -> Association:
    """An established association proposing `contexts` (with SCP/SCU `roles`, and event
    `handlers`: a C-GET's storage), or PacsError saying why not."""
    if not contexts or len(contexts) > MAX_CONTEXTS:
        raise ValueError(f"an association proposes 1 to {MAX_CONTEXTS} presentation contexts")
    ae = AE(ae_title=endpoint.calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = endpoint.timeout_seconds
    ae.connection_timeout = min(endpoint.timeout_seconds, _CONNECT_TIMEOUT_SECONDS)
    ae.maximum_pdu_size = 0  # no limit on what vault receives; the PACS sets what it sends
    for context in contexts:
        ae.add_requested_context(context.sop_class, list(context.transfer_syntaxes))
    tls = tls_context(endpoint)
    answers: list[Any] = []
    assoc = ae.associate(
        endpoint.host,
        endpoint.port,
        ae_title=endpoint.ae_title,
        tls_args=(tls, endpoint.tls.server_name or endpoint.host) if tls and endpoint.tls else None,
        ext_neg=list(roles) or None,
        evt_handlers=[
            (evt.EVT_ACSE_RECV, lambda event: answers.append(event.primitive)),
            (evt.EVT_CONN_OPEN, _no_delay),
            *handlers,
        ],
    )
    if assoc.is_established:
        return assoc
    if any(getattr(a, "result", None) == 0 for a in answers):
        raise NoContextAccepted(
            f"PACS {endpoint.describe()}: it accepts none of the "
            + ", ".join(sorted({c.sop_class for c in contexts})),
            permanent=True,
        )
    why, permanent = _why_not(endpoint, assoc, answers, tls)
    raise PacsError(f"PACS {endpoint.describe()}: {why}", permanent=permanent)


def _no_delay(event: Any) -> None:
    """Send each PDU at once (TCP_NODELAY). With Nagle's algorithm the last short segment of
    every instance waited for the PACS's delayed acknowledgement, about 40 ms an instance:
    a 600-slice CT study took 36 s over loopback instead of a few."""
    raw = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if raw is not None:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _why_not(
    endpoint: PacsEndpoint, assoc: Association, answers: list[Any], tls: ssl.SSLContext | None
) -> tuple[str, bool]:
    """Why the association did not open, and whether that is for good."""
    # The rejection as it arrived: a PACS that closes the connection right after rejecting
    # can leave pynetdicom reporting an abort instead.
    answer = next((a for a in answers if getattr(a, "result", None) in (1, 2)), None)
    if assoc.is_rejected or answer is not None:
        diagnostic = getattr(answer, "diagnostic", None)
        source = getattr(answer, "result_source", None)
        transient = getattr(answer, "result", None) == 2
        if source == 1 and diagnostic in _REJECT_REASONS:
            reason = _REJECT_REASONS[diagnostic].format(
                calling=endpoint.calling_ae_title, called=endpoint.ae_title
            )
        elif source in (2, 3):
            reason, transient = "it is busy or has reached its limit of associations", True
        else:
            reason = f"reason code {diagnostic}"
        kind = "for now" if transient else "permanently"
        return f"the PACS rejected the association {kind}: {reason}", not transient
    # A port nobody listens on also ends as an abort in pynetdicom: connect again by hand to
    # tell the network's reasons from the PACS's.
    network, permanent = _diagnose(endpoint, tls)
    if network:
        return network, permanent
    if assoc.is_aborted:
        return (
            "the PACS aborted the association request (a PACS that accepts only known AE "
            "titles, or that expects DICOM TLS, often does this)"
        ), False
    scheme = "over TLS " if tls else ""
    return (
        f"the PACS accepts connections {scheme}but did not answer the association request in "
        f"{endpoint.timeout_seconds:g} s" + ("" if tls else " (does it expect DICOM TLS?)")
    ), False


def _diagnose(endpoint: PacsEndpoint, tls: ssl.SSLContext | None) -> tuple[str | None, bool]:
    """Why the network keeps vault from the PACS (found by connecting again by hand), or None
    when a connection, and for TLS a verified handshake, work; and whether it is for good."""
    where = f"{endpoint.host}:{endpoint.port}"
    try:
        raw = socket.create_connection(
            (endpoint.host, endpoint.port), timeout=min(endpoint.timeout_seconds, 10.0)
        )
    except ConnectionRefusedError:
        return f"nothing listens on {where} (wrong port, or the PACS is not running)", False
    except TimeoutError:
        return f"no answer from {where} (host down, or a firewall drops the connection)", False
    except socket.gaierror:
        return f"the host name {endpoint.host!r} does not resolve", True
    except OSError as exc:
        return f"cannot connect to {where}: {exc.strerror or exc}", False
    with raw:
        if tls is None:
            return None, False
        server_name = (endpoint.tls.server_name if endpoint.tls else None) or endpoint.host
        try:
            with tls.wrap_socket(raw, server_hostname=server_name):
                return None, False
        except ssl.SSLCertVerificationError as exc:
            return (
                f"TLS: the PACS's certificate did not verify ({exc.verify_message}): a wrong "
                "ca_file, or a certificate for another name (server_name)"
            ), True
        except ssl.SSLError as exc:
            why = f"TLS handshake failed ({exc.reason or exc}): does the PACS speak DICOM TLS here?"
            return why, True
        except OSError as exc:
            return f"TLS handshake failed: {exc.strerror or exc}", False
