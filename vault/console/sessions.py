"""Signed-in sessions, held in the server's memory only: a restart signs everyone out.

A session ends after `idle_seconds` without a request (automatic logoff, HIPAA
164.312(a)(2)(iii)), at sign-out, or when its account is removed (and perhaps made again
under the same name) or its password changed, in the browser or on the command line. Paths of
a snapshot's tree can name patients, so they never go into a URL: a page links to a
session-scoped opaque handle that stands for one (repository, snapshot, path).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAX_HANDLES = 20_000  # per session: the oldest go first


@dataclass
class Session:
    token: str
    user: str
    role: str
    csrf: str
    created: float
    last_seen: float
    must_change: bool = False
    # Which account, and which of its passwords, signed in (the password hash's salt): an
    # account removed and made again, or whose password changed, has another, and the
    # session ends.
    account: str = ""
    handles: dict[str, Any] = field(default_factory=dict)

    def handle(self, value: Any) -> str:
        """An opaque name for `value`, usable in URLs by this session only."""
        key = secrets.token_urlsafe(9)
        self.handles[key] = value
        if len(self.handles) > MAX_HANDLES:
            del self.handles[next(iter(self.handles))]
        return key


class Sessions:
    def __init__(
        self,
        idle_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        on_idle: Callable[[Session], None] = lambda session: None,
    ) -> None:
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._on_idle = on_idle
        self._sessions: dict[str, Session] = {}
        self._guard = threading.Lock()

    def create(self, user: str, role: str, *, must_change: bool, account: str) -> Session:
        now = self._clock()
        session = Session(
            secrets.token_urlsafe(32),
            user,
            role,
            secrets.token_urlsafe(32),
            now,
            now,
            must_change,
            account,
        )
        with self._guard:
            self._sessions[session.token] = session
        return session

    def get(self, token: str | None, *, touch: bool = True) -> Session | None:
        """The live session of `token`; an idle one is ended here, and None returned."""
        if not token:
            return None
        now = self._clock()
        with self._guard:
            session = self._sessions.get(token)
            if session is None:
                return None
            if now - session.last_seen > self.idle_seconds:
                del self._sessions[token]
                ended = session
            else:
                if touch:
                    session.last_seen = now
                return session
        self._on_idle(ended)  # outside the lock: it writes the console's log
        return None

    def end(self, token: str) -> None:
        with self._guard:
            self._sessions.pop(token, None)

    def end_user(self, user: str) -> None:
        with self._guard:
            for token in [t for t, s in self._sessions.items() if s.user == user]:
                del self._sessions[token]
