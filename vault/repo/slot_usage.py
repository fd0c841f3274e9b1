"""When and from which host the slot that opened a repository was last used: kept in the slot's
sealed usage record (never in the plaintext slot, which must not be rewritten just to log),
so `vault key list` can show which machine holds which key."""

from __future__ import annotations

import contextlib
import hashlib
import socket
from datetime import UTC, datetime, timedelta

from vault.errors import VaultError
from vault.format import layout
from vault.repo.repository import Repository


def record_slot_use(repo: Repository, *, hourly: bool = True) -> None:
    """Note that this host used the slot that opened the repository (best effort: a
    read-only credential or a storage hiccup must not fail the job)."""
    now = datetime.now(UTC)
    info = repo.slot_info(repo.slot_id)
    last = info.get("last_used")
    recorded = "slot_sha256" in info
    if hourly and recorded and last and now - datetime.fromisoformat(last) < timedelta(hours=1):
        return
    info.update(last_used_host=socket.gethostname(), last_used=now.isoformat(timespec="seconds"))
    if not recorded:
        # A lost record, written again: the slot just opened the master key, so it is one
        # of the keyholders' own (check names slots without a record: vault.jobs.check).
        with contextlib.suppress(VaultError):
            stored = repo.storage.get(layout.key_slot(repo.slot_id))
            info["slot_sha256"] = hashlib.sha256(stored).hexdigest()
    with contextlib.suppress(VaultError):
        repo.save_slot_info(repo.slot_id, info)
