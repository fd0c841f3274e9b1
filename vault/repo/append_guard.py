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
A client that finds the condition ignored records that in the repository (state/append-lock),
and every client then takes the lock, whatever its own probe says: clients may reach the server
by different paths (one through a proxy that strips the header).

What this cannot cover: vault clients older than this scheme (they neither probe nor lock), and
a server that accepts the condition but enforces it non-atomically (the probe's two sequential
writes cannot tell that from a correct one).
"""

from __future__ import annotations

import contextlib
import json
import random
import time
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from vault import ids
from vault.errors import ObjectExists, RepositoryLocked, StorageError, VaultError
from vault.format import layout, sealing
from vault.repo import jobstate
from vault.repo.lock import SCOPED_STALE, Lock
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
    with contextlib.suppress(ObjectExists):  # a retried first write that had landed
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


def _needs_lock(repo: Repository) -> bool:
    # What other clients recorded is read while the probe runs: on S3 each is a round trip.
    with ThreadPoolExecutor(max_workers=1) as pool:
        recorded = pool.submit(jobstate.load, repo, jobstate.APPEND_LOCK)
        holds = conditional_writes_hold(repo)
        found = recorded.result()
    if not holds:
        if found is None:
            with contextlib.suppress(VaultError):  # the lock is taken anyway; others learn later
                jobstate.save(repo, jobstate.APPEND_LOCK, {"found": _now()})
        return True
    return found is not None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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
    if not _needs_lock(repo):
        yield
        return
    deadline = time.monotonic() + APPEND_LOCK_WAIT
    delay = 0.05
    # When each blocking lock was first seen in the state it is in: one that never changes
    # (its holder stopped refreshing it) is stale after SCOPED_STALE of this machine's time.
    first_seen: dict[tuple[str, datetime], float] = {}
    while True:
        lock = Lock(repo.storage, repo.keyring, exclusive=True, operation=operation, scope=prefix)
        try:
            lock.acquire()
            break
        except RepositoryLocked as busy:
            now = time.monotonic()
            for other in lock.blocking:
                seen = first_seen.setdefault((other.id, other.time), now)
                if now - seen >= SCOPED_STALE.total_seconds():
                    # Unchanged for longer than any refresh interval: its holder is gone.
                    with contextlib.suppress(StorageError):
                        repo.storage.delete(layout.lock(other.id))
                    delay = 0.0
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
        # The append is done (or failed for its own reason, which must not be masked): a lock
        # that cannot be removed now is removed by `vault unlock`, or seen as stale.
        with contextlib.suppress(VaultError):
            lock.release()
