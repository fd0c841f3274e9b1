"""C-ECHO: is the PACS there, does it know vault's AE title, does TLS verify."""

from __future__ import annotations

import time

from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from vault.pacs.connect import Context, NoContextAccepted, PacsError, open_association
from vault.policy.pacs import PacsEndpoint


class NoVerification(PacsError):
    """The PACS took the association but does not offer C-ECHO (some store all the same)."""


_SYNTAXES = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")  # explicit, implicit VR little endian


def echo(endpoint: PacsEndpoint) -> float:
    """Seconds from asking for the association to the echo's answer; PacsError saying why
    not otherwise."""
    started = time.monotonic()
    try:
        assoc = open_association(endpoint, [Context(str(Verification), _SYNTAXES)])
    except NoContextAccepted:
        raise NoVerification(
            f"PACS {endpoint.describe()}: the association opened but the PACS does not offer "
            "the Verification service (C-ECHO)"
        ) from None
    try:
        status = assoc.send_c_echo()
    finally:
        if assoc.is_established:
            assoc.release()
    code = getattr(status, "Status", None)
    if code != 0x0000:
        answer = "no answer" if code is None else f"status 0x{code:04X}"
        raise PacsError(f"PACS {endpoint.describe()}: C-ECHO failed ({answer})")
    return time.monotonic() - started
