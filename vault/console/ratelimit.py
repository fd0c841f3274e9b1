"""Sign-in attempts per client address: beyond `limit` failures within `window` seconds the
address is refused until the oldest ages out. Account lockout (vault.console.users) stops
guessing one account's password; this stops spraying many accounts from one place."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class FailureWindow:
    def __init__(
        self, limit: int = 20, window: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._guard = threading.Lock()

    def _recent(self, address: str) -> deque[float]:
        now = self._clock()
        found = self._failures.setdefault(address, deque())
        while found and now - found[0] > self.window:
            found.popleft()
        return found

    def attempt(self, address: str) -> float | None:
        """Count a sign-in from `address` as failed before its password is checked (so
        attempts sent in parallel cannot pass the check together), or None when the address
        is over its limit. A sign-in that passes gives its mark back with `passed`."""
        with self._guard:
            recent = self._recent(address)
            if len(recent) >= self.limit:
                return None
            mark = self._clock()
            recent.append(mark)
            return mark

    def passed(self, address: str, mark: float) -> None:
        with self._guard:
            recent = self._failures.get(address)
            if recent is not None and mark in recent:
                recent.remove(mark)
