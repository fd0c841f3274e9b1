"""Small mutable job state kept in the repository: `state/<name>`, sealed JSON, replaced whole.

It lives in the repository (not on the backup host) so that `status` run anywhere sees the last
check, and a rotating read-data check continues where the last one stopped even after the
backup server is replaced. Losing it is harmless: the rotation starts over.
"""

from __future__ import annotations

import json
from typing import Any

from vault.errors import ObjectNotFound, VaultError
from vault.format import layout, sealing
from vault.repo.repository import Repository

CHECK = "check"  # the last `vault check`: time, outcome, and where the data rotation stopped


def load(repo: Repository, name: str) -> dict[str, Any] | None:
    """The state named `name`, or None when there is none (or it cannot be read)."""
    try:
        doc = json.loads(repo.open_object(sealing.Kind.STATE, layout.state(name)))
    except ObjectNotFound:
        return None
    except (VaultError, ValueError):
        return None  # damaged state only restarts a rotation; `check` reports the object
    return doc if isinstance(doc, dict) else None


def save(repo: Repository, name: str, doc: dict[str, Any]) -> None:
    payload = json.dumps(doc, sort_keys=True).encode()
    repo.put(layout.state(name), repo.seal(sealing.Kind.STATE, name, payload))
