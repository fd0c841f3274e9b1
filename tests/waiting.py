"""Waiting on events, not sleeping: kill points in crash tests and server readiness.

A `Changes` source blocks until something happened (a file appeared under a directory, a
request passed the fault proxy) or a timeout passed; `wait_until` re-checks its condition after
each change. Nothing here sleeps a fixed time.
"""

from __future__ import annotations

import ctypes
import os
import select
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

_IN_MODIFY, _IN_CLOSE_WRITE, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE = 0x2, 0x8, 0x80, 0x100, 0x200
_IN_ISDIR = 0x40000000
_MASK = _IN_MODIFY | _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE
_EVENT = struct.Struct("iIII")


class Changes(Protocol):
    def wait(self, timeout: float) -> None: ...


class DirectoryChanges:
    """inotify on a directory tree (new subdirectories are watched as they appear)."""

    def __init__(self, root: Path) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._paths: dict[int, bytes] = {}
        root.mkdir(parents=True, exist_ok=True)
        for directory, _, _ in os.walk(root):
            self._watch(os.fsencode(directory))

    def _watch(self, path: bytes) -> None:
        wd = self._libc.inotify_add_watch(self._fd, path, _MASK)
        if wd >= 0:
            self._paths[wd] = path

    def wait(self, timeout: float) -> None:
        ready, _, _ = select.select([self._fd], [], [], max(timeout, 0.0))
        if not ready:
            return
        data = os.read(self._fd, 65536)
        offset = 0
        while offset < len(data):
            wd, mask, _, length = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
            offset += _EVENT.size + length
            if mask & _IN_CREATE and mask & _IN_ISDIR and wd in self._paths:
                self._watch(os.path.join(self._paths[wd], name))

    def close(self) -> None:
        os.close(self._fd)


class RequestChanges:
    """Notified by the fault proxy after every request it forwarded."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._count = 0

    def notify(self) -> None:
        with self._condition:
            self._count += 1
            self._condition.notify_all()

    def wait(self, timeout: float) -> None:
        with self._condition:
            seen = self._count
            self._condition.wait_for(lambda: self._count != seen, timeout=max(timeout, 0.0))


def wait_until(
    condition: Callable[[], bool],
    changes: Changes,
    *,
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
) -> bool:
    """True once `condition` holds; False when `process` ended or `timeout` passed first."""
    deadline = time.monotonic() + timeout
    while not condition():
        remaining = deadline - time.monotonic()
        if remaining <= 0 or (process is not None and process.poll() is not None):
            return False
        # Bounded so a process that ends without touching anything is noticed.
        changes.wait(min(remaining, 1.0))
    return True
