"""The console's own log: each sign-in attempt, success or not, each sign-out (by hand or after
idle time), each page refused above a role, as one JSON line (mode 0600) in the state
directory. It names the account, the client address and the route's pattern, never a password,
a code or a URL. Repository events (searches, views, restores) go to each repository's audit
log instead."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

SIGNINS_FILE = "signins.jsonl"


class SignInLog:
    def __init__(self, directory: Path) -> None:
        self.path = directory / SIGNINS_FILE
        self._guard = threading.Lock()

    def add(self, user: str, address: str, outcome: str, detail: str = "") -> None:
        line = json.dumps(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "user": user[:64],
                "address": address,
                "outcome": outcome,
                "detail": detail,
            }
        )
        with self._guard:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, line.encode() + b"\n")
            finally:
                os.close(fd)

    def recent(self, count: int = 50) -> list[dict[str, Any]]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                lines = deque(handle, maxlen=count)
        except FileNotFoundError:
            return []
        found = []
        for line in reversed(lines):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found
