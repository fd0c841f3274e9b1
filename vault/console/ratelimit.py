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

    def blocked(self, address: str) -> bool:
        with self._guard:
            return len(self._recent(address)) >= self.limit

    def failed(self, address: str) -> None:
        with self._guard:
            self._recent(address).append(self._clock())
