"""Repository locks: shared for backup/restore/check, exclusive for prune and re-encryption.

A lock is a sealed object locks/<random id> naming host, pid, kind and refresh time. It is
refreshed every REFRESH while held. A lock is stale when it has not been refreshed for STALE,
or when it names this host and a process that no longer exists (so a backup killed with
SIGKILL never blocks the next run on the same machine). Acquisition writes the lock, then
re-reads all locks and backs out on conflict: two clients racing both see each other.
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
from vault.storage import Storage

REFRESH = timedelta(minutes=5)
STALE = timedelta(minutes=30)


@dataclass(frozen=True)
class LockInfo:
    id: str
    host: str
    pid: int
    exclusive: bool
    time: datetime
    operation: str

    def is_stale(self, now: datetime, this_host: str) -> bool:
        if now - self.time > STALE:
            return True
        return self.host == this_host and not _process_alive(self.pid)

    def describe(self, now: datetime) -> str:
        kind = "exclusive" if self.exclusive else "shared"
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


def list_locks(storage: Storage, keys: sealing.EpochKeys) -> list[LockInfo]:
    found = []
    for info in storage.list(layout.LOCKS):
        lock_id = layout.id_of(info.key)
        try:
            blob = storage.get(info.key)
            doc = json.loads(
                sealing.open_sealed(keys, sealing.Kind.LOCK, lock_id, blob, name=info.key)
            )
        except (ObjectNotFound, IntegrityError, ValueError):
            continue  # vanished, or not ours to read: neither blocks nor is removed here
        try:
            found.append(_parse_lock(lock_id, doc))
        except (KeyError, ValueError, TypeError):
            continue  # malformed: ignored like an unreadable lock
    return found


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
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._storage = storage
        self._keys = keys
        self.exclusive = exclusive
        self.operation = operation
        self._now = now
        self.id = ids.new_id()
        self.host = socket.gethostname()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stale_seen: list[LockInfo] = []

    def _write(self) -> None:
        doc = {
            "version": 1,
            "host": self.host,
            "pid": os.getpid(),
            "exclusive": self.exclusive,
            "time": self._now().isoformat(),
            "operation": self.operation,
        }
        blob = sealing.seal(self._keys, sealing.Kind.LOCK, self.id, json.dumps(doc).encode())
        self._storage.put(layout.lock(self.id), blob)

    def _conflicts(self) -> list[LockInfo]:
        now = self._now()
        others = [lk for lk in list_locks(self._storage, self._keys) if lk.id != self.id]
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
        while not self._stop.wait(REFRESH.total_seconds()):
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
    """(removed, kept): stale locks are removed; live ones too only when forced."""
    host = socket.gethostname()
    removed, kept = [], []
    for lock in list_locks(storage, keys):
        if force or lock.is_stale(now, host):
            storage.delete(layout.lock(lock.id))
            removed.append(lock)
        else:
            kept.append(lock)
    return removed, kept
