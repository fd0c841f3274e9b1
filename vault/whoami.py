"""Who runs vault: the operating-system user, for snapshots, drill records and audit events."""

from __future__ import annotations

import os
import pwd


def os_user() -> str:
    """The user the system says runs this process (its effective uid), never what LOGNAME or
    USER claim: an audit trail must not take the actor's word for who they are."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # no passwd entry (containers)
        return f"uid {os.geteuid()}"
