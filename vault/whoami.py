"""Who runs vault: the operating-system user, for snapshots, drill records and audit events."""

from __future__ import annotations

import getpass
import os


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers) and no USER variable
        return f"uid {os.getuid()}"
