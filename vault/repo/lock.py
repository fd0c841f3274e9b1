"""Repository locks: shared for backup/restore/check, exclusive for prune and re-encryption.

A lock is a sealed object locks/<random id> naming host, pid, kind and refresh time. It is
refreshed every REFRESH while held. A lock is stale when it has not been refreshed for STALE,
or when it names this host and a process that no longer exists (so a backup killed with
SIGKILL never blocks the next run on the same machine). Acquisition writes the lock, then
re-reads all locks and backs out on conflict: two clients racing both see each other. This
needs no conditional write (every lock has its own random name), which is why it can stand in
for one.

A scoped lock (scope = a chain prefix such as "audit/") is exclusive among locks of the same
scope only and invisible to repository locks: it serialises appends to one chain on a server
that ignores If-None-Match, without waiting for a backup's shared lock to end. It lives seconds,
so it is refreshed every SCOPED_REFRESH; it is stale when its holder is known dead on this host,
or once a waiting client has seen it unchanged for SCOPED_STALE by its own clock (never by the
holder's timestamp, which another host's clock skew would make wrong). Clients that predate
scopes read it as an exclusive lock and back off for those seconds, the safe misreading.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from vault import ids
from vault.errors import IntegrityError, ObjectNotFound, RepositoryLocked, VaultError
from vault.format import layout, sealing
from vault.parallel import in_order
from vault.storage import Storage

REFRESH = timedelta(minutes=5)
STALE = timedelta(minutes=30)
SCOPED_REFRESH = timedelta(seconds=15)
SCOPED_STALE = timedelta(minutes=2)


@dataclass(frozen=True)
class LockInfo:
    id: str
    host: str
    pid: int
    exclusive: bool
    time: datetime
    operation: str
    scope: str = ""  # a chain prefix for an append lock; "" for a repository lock

    def is_stale(self, now: datetime, this_host: str) -> bool:
        # An append lock lives seconds: judged by its age, a few minutes of clock skew between
        # hosts would let a second appender in. It is stale only when its holder is known dead
        # here, or (vault.repo.append_guard) when it stopped changing for SCOPED_STALE.
        if not self.scope and now - self.time > STALE:
            return True
        return self.host == this_host and not _process_alive(self.pid)

    def describe(self, now: datetime) -> str:
        kind = "exclusive" if self.exclusive else "shared"
        if self.scope:
            kind = f"{self.scope.rstrip('/')} append"
        return (
            f"{kind} lock {ids.short(self.id)} ({self.operation}) held by pid {self.pid} "
            f"on {self.host}, refreshed {self.age(now)} ago"
        )

    def age(self, now: datetime) -> str:
        seconds = max(0, int((now - self.time).total_seconds()))
        if seconds < 120:
            return f"{seconds} s"
        if seconds < 7200:
            return f"{seconds // 60} min"
        return f"{seconds // 3600} h" if seconds < 172800 else f"{seconds // 86400} days"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# Locks read at once: on a remote store each is a round trip.
LOCK_READ_THREADS = 8


def list_locks(storage: Storage, keys: sealing.EpochKeys, *, but: str = "") -> list[LockInfo]:
    """Every readable lock, except the one of id `but` (not even read: a holder checking for
    others after writing its own lock)."""
    return _read_locks(storage, keys, but=but)[0]


def _read_locks(
    storage: Storage, keys: sealing.EpochKeys, *, but: str = ""
) -> tuple[list[LockInfo], list[str]]:
    """(locks, probe objects): a conditional-write probe (vault.repo.append_guard) lives under
    locks/ for milliseconds, or longer when its delete failed; it is no lock."""
    found, probes = [], []

    def read(key: str) -> Any:
        lock_id = layout.id_of(key)
        try:
            blob = storage.get(key)
            return json.loads(sealing.open_sealed(keys, sealing.Kind.LOCK, lock_id, blob, name=key))
        except (ObjectNotFound, IntegrityError, ValueError):
            return None  # vanished, or not ours to read: neither blocks nor is removed here

    listed = [i.key for i in storage.list(layout.LOCKS) if not but or layout.id_of(i.key) != but]
    for key, doc in in_order(listed, read, LOCK_READ_THREADS):
        if doc is None:
            continue
        lock_id = layout.id_of(key)
        if isinstance(doc, dict) and "probe" in doc:
            probes.append(key)
            continue
        try:
            found.append(_parse_lock(lock_id, doc))
        except (KeyError, ValueError, TypeError):
            continue  # malformed: ignored like an unreadable lock
    return found, probes


def _parse_lock(lock_id: str, doc: dict[str, Any]) -> LockInfo:
    if doc.get("version") != 1:
        raise ValueError("unsupported lock version")
    return LockInfo(
        lock_id,
        str(doc["host"]),
        int(doc["pid"]),
        bool(doc["exclusive"]),
        datetime.fromisoformat(doc["time"]),
        str(doc.get("operation", "")),
        str(doc.get("scope", "")),
    )


class Lock:
    """A held lock; use as a context manager."""

    def __init__(
        self,
        storage: Storage,
        keys: sealing.EpochKeys,
        *,
        exclusive: bool,
        operation: str,
        scope: str = "",
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._storage = storage
        self._keys = keys
        self.exclusive = exclusive or bool(scope)
        self.operation = operation
        self.scope = scope
        self._now = now
        self.id = ids.new_id()
        self.host = socket.gethostname()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stale_seen: list[LockInfo] = []
        self.blocking: list[LockInfo] = []  # the live conflicting locks the last acquire met

    def _write(self) -> None:
        doc = {
            "version": 1,
            "host": self.host,
            "pid": os.getpid(),
            "exclusive": self.exclusive,
            "time": self._now().isoformat(),
            "operation": self.operation,
        }
        if self.scope:
            doc["scope"] = self.scope
        blob = sealing.seal(self._keys, sealing.Kind.LOCK, self.id, json.dumps(doc).encode())
        self._storage.put(layout.lock(self.id), blob)

    def _conflicts(self) -> list[LockInfo]:
        now = self._now()
        others = [
            lk
            for lk in list_locks(self._storage, self._keys, but=self.id)
            if lk.scope == self.scope
        ]
        # Kept for the caller: a stale lock means a run was killed (a backup then adopts the
        # packs it left), learned here without listing the locks again.
        self.stale_seen = [lk for lk in others if lk.is_stale(now, self.host)]
        return [
            other
            for other in others
            if (self.exclusive or other.exclusive) and not other.is_stale(now, self.host)
        ]

    def acquire(self) -> Lock:
        blocking = self._conflicts()
        if not blocking:
            self._write()
            blocking = self._conflicts()
            if blocking:
                self._storage.delete(layout.lock(self.id))
        self.blocking = blocking
        if blocking:
            raise RepositoryLocked(
                f"repository is locked: {blocking[0].describe(self._now())}; "
                "if that process is gone, run `vault unlock`"
            )
        self._thread = threading.Thread(target=self._refresh_loop, name="lock-refresh", daemon=True)
        self._thread.start()
        return self

    def reseal(self, keys: sealing.EpochKeys) -> None:
        """Rewrite the held lock under `keys` (after a key rotation retired its epoch)."""
        self._keys = keys
        self._write()

    def _refresh_loop(self) -> None:
        every = SCOPED_REFRESH if self.scope else REFRESH
        while not self._stop.wait(every.total_seconds()):
            try:
                self._write()
            except Exception:  # a missed refresh is retried; staleness takes 30 minutes
                continue

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._storage.delete(layout.lock(self.id))

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self.release()
            except VaultError as failure:
                # The job is done: a lock that cannot be removed (the storage failing right
                # now) must not turn its success into a failure. This host sees the lock as
                # stale once this process exits, other hosts after STALE.
                print(
                    f"vault: warning: could not remove lock {ids.short(self.id)} ({failure}); "
                    "`vault unlock` removes it",
                    file=sys.stderr,
                )
            return
        # The job already failed: report that failure, not a failure to remove the lock (a
        # storage outage usually causes both). The lock goes stale and stops blocking.
        with contextlib.suppress(VaultError):
            self.release()


def remove_stale_locks(
    storage: Storage, keys: sealing.EpochKeys, *, force: bool, now: datetime
) -> tuple[list[LockInfo], list[LockInfo]]:
    """(removed, kept): stale locks are removed; live ones too only when forced. Probe objects
    left behind are removed too (one deleted mid-probe only makes that probe answer "not
    enforced", the safe answer)."""
    host = socket.gethostname()
    removed, kept = [], []
    locks, probes = _read_locks(storage, keys)
    for key in probes:
        storage.delete(key)
    for lock in locks:
        if force or lock.is_stale(now, host):
            storage.delete(layout.lock(lock.id))
            removed.append(lock)
        else:
            kept.append(lock)
    return removed, kept
