"""Chain appends that cannot lose a record, whatever the server does with If-None-Match.

A chain append (vault.repo.chain) is a put-if-absent on the next record number: of two writers
racing for record n, one wins and the other retries on n+1. That holds only if the server
enforces the condition. Some S3-compatible servers reject If-None-Match (the backend then falls
back to check-then-write, which two writers can both pass), and some accept the header and
ignore it, or a proxy strips it: then the second put silently replaces the first record.

So before its first append a process probes: it writes a sealed probe object under locks/ with
if_absent, writes it again with if_absent, and deletes it. A second write that succeeds, or a
backend that says it checks then writes, means appends must be serialised another way: by a
lock scoped to the chain (vault.repo.lock), which needs no conditional write. The probe costs
three requests once per process and storage; its payload is not a lock, so lock readers skip it.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
import weakref
from collections.abc import Iterator

from vault import ids
from vault.errors import ObjectExists, RepositoryLocked, StorageError, VaultError
from vault.format import layout, sealing
from vault.repo.lock import Lock
from vault.repo.repository import Repository
from vault.storage import Storage

# How long an append waits for another client's append lock before giving up. Appends take
# well under a second; a lock left by a killed client goes stale after lock.SCOPED_STALE.
APPEND_LOCK_WAIT = 150.0

_probed: weakref.WeakKeyDictionary[Storage, bool] = weakref.WeakKeyDictionary()

ENFORCED = "enforced: tested by writing an object twice"
CONDITIONAL_MISSING = (
    "no: the server does not enforce If-None-Match, so audit and drill appends take a "
    "lock scoped to their chain instead"
)


def conditional_writes_hold(repo: Repository) -> bool:
    """Whether put(if_absent=True) on this repository's storage refuses a second writer."""
    known = _probed.get(repo.storage)
    if known is None:
        known = _probe(repo)
        _probed[repo.storage] = known
    return known


def _probe(repo: Repository) -> bool:
    probe_id = ids.new_id()
    key = layout.lock(probe_id)
    payload = json.dumps({"probe": "conditional write"}).encode()
    blob = sealing.seal(repo.keyring, sealing.Kind.LOCK, probe_id, payload)
    repo.storage.put(key, blob, if_absent=True)
    try:
        try:
            repo.storage.put(key, blob, if_absent=True)
        except ObjectExists:
            return repo.storage.atomic_if_absent()
        return False
    finally:
        # The answer stands even if the delete fails; `vault unlock` removes a probe left over.
        with contextlib.suppress(StorageError):
            repo.storage.delete(key)


def capabilities(repo: Repository) -> dict[str, str]:
    """The storage's capability report with conditional writes as the probe found them."""
    found = repo.storage.capabilities()
    try:
        holds = conditional_writes_hold(repo)
    except StorageError as exc:  # credentials that may only read: say so, do not fail a report
        found["conditional writes"] = f"unknown: the probe could not write ({exc})"
        return found
    if not holds:
        found["conditional writes"] = CONDITIONAL_MISSING
        return found
    # The backend's own words for how (exclusive create; If-None-Match), then the proof.
    how = found.get("conditional writes", "")
    how = how if how.startswith("yes") else "yes (If-None-Match)"
    found["conditional writes"] = f"{how}, {ENFORCED}"
    return found


@contextlib.contextmanager
def serialised(repo: Repository, prefix: str, *, operation: str) -> Iterator[None]:
    """Hold what makes an append to `prefix` safe: nothing where the server enforces
    put-if-absent, otherwise the chain's append lock (waiting for another client's)."""
    if conditional_writes_hold(repo):
        yield
        return
    deadline = time.monotonic() + APPEND_LOCK_WAIT
    delay = 0.05
    while True:
        lock = Lock(repo.storage, repo.keyring, exclusive=True, operation=operation, scope=prefix)
        try:
            lock.acquire()
            break
        except RepositoryLocked as busy:
            if time.monotonic() >= deadline:
                raise VaultError(
                    f"could not append to {prefix.rstrip('/')}: another client has held its "
                    f"append lock for {APPEND_LOCK_WAIT:.0f} s ({busy})"
                ) from None
            # Two clients that wrote their locks at once both back off; random waits part them.
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)
    try:
        yield
    finally:
        lock.release()
