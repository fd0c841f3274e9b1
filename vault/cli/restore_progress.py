"""How a restore reports as it goes: an honest time left, on the terminal and as JSON lines.

The time left is measured, never assumed. Two kinds of work are timed apart: fetching and
writing, and reading back to verify (a prioritised restore verifies every tier before the
next). Each has its own speed, bytes over the last WINDOW seconds of the time spent on that
kind of work (time spent on the other, or on planning, does not dilute it), and the time left
is what remains of each at its speed. Until verification has been timed it is reckoned at the
fetch speed (verification is faster, so the estimate errs long, not short). Bytes a resume
found already in place count as done but not as speed (they were checked, not fetched); a
resume's later tiers are reckoned as if nothing of them were in place (long again). Until
something has been restored the time left is null ("measuring"), not a guess; once nothing is
left it is 0.

`--json-progress` writes one JSON object per line on stdout: "plan" (the tiers and their
sizes), "tier_started", "progress" (every INTERVAL seconds, and at every tier's start and
end), "verifying", "tier_done", and finally "result" (the document --json prints) or, when the
restore stops on an error, "error".
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TextIO

from vault.jobs.restore.restorer import TierResult
from vault.jobs.restore.tiers import TierPlan
from vault.progress import NoProgress, Progress
from vault.units import human_bytes, human_seconds

WINDOW = 30.0  # seconds of (active) history a speed is measured over


class RateMeter:
    """Bytes per second over the last WINDOW seconds of the time it was running (paused time
    does not count: a meter of fetching stops while files are verified)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, running: bool = True) -> None:
        self.clock = clock
        self.total = 0
        self._paused_at: float | None = None if running else clock()
        self._paused_for = 0.0
        self._samples: deque[tuple[float, int]] = deque([(self._now(), 0)])

    def _now(self) -> float:
        """Time on the meter: wall time minus the time spent paused."""
        at = self._paused_at if self._paused_at is not None else self.clock()
        return at - self._paused_for

    def pause(self) -> None:
        if self._paused_at is None:
            self._paused_at = self.clock()

    def run(self) -> None:
        if self._paused_at is not None:
            self._paused_for += self.clock() - self._paused_at
            self._paused_at = None

    def add(self, amount: int) -> None:
        self.total += amount
        now = self._now()
        if now - self._samples[-1][0] >= 0.25:  # a sample per quarter second bounds the memory
            self._samples.append((now, self.total))
        while len(self._samples) > 2 and now - self._samples[1][0] >= WINDOW:
            self._samples.popleft()

    def rate(self) -> float | None:
        then, done_then = self._samples[0]
        span = self._now() - then
        done = self.total - done_then
        return done / span if done > 0 and span > 0 else None


class RestoreReport:
    """Both a Progress (bytes as they are written and verified) and a RestoreMonitor (tiers):
    keeps the counts every view needs. Thread-safe: fetch threads advance it."""

    def __init__(self, bar: Progress | None = None, *, verifies: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.bar = bar or NoProgress()
        self.verifies = verifies
        self.clock = clock
        self.started = clock()
        self.fetch = RateMeter(clock, running=False)
        self.check = RateMeter(clock, running=False)
        self.lock = threading.Lock()
        self.tiers: list[TierPlan] = []
        self.current: TierPlan | None = None
        self.phase = "planning"
        self.done_total = 0  # content bytes restored or found in place, all tiers
        self.done_tier = 0
        self.verified_total = 0  # bytes read back, all tiers
        self._unmetered = 0  # announced by kept(), advanced next: done, but not speed
        self.finished: list[TierResult] = []

    # -- Progress -----------------------------------------------------------------------------

    def start(self, label: str, total: int | None, unit: str = "B") -> None:
        self.bar.start(label, total, unit)

    def advance(self, amount: int) -> None:
        self.bar.advance(amount)
        with self.lock:
            if self.phase == "restore":
                self.done_total += amount
                self.done_tier += amount
                unmetered = min(self._unmetered, amount)
                self._unmetered -= unmetered
                if amount > unmetered:
                    self.fetch.add(amount - unmetered)
            elif self.phase == "verify":
                self.verified_total += amount
                self.check.add(amount)

    def set_total(self, total: int) -> None:
        self.bar.set_total(total)

    def finish(self) -> None:
        self.bar.finish()

    # -- RestoreMonitor -----------------------------------------------------------------------

    def planned(self, tiers: list[TierPlan]) -> None:
        self.tiers = tiers

    def tier_started(self, tier: TierPlan) -> None:
        with self.lock:
            self.current, self.phase, self.done_tier = tier, "restore", 0
            self.fetch.run()

    def kept(self, amount: int) -> None:
        # The advance that follows counts as done, but not as speed: it was checked, not fetched.
        with self.lock:
            self._unmetered += amount

    def verifying(self, tier: TierPlan) -> None:
        with self.lock:
            self.phase = "verify"
            self.fetch.pause()
            self.check.run()

    def tier_finished(self, result: TierResult) -> None:
        with self.lock:
            self.finished.append(result)
            self.phase = "between tiers"
            self.fetch.pause()
            self.check.pause()
            tier = self.current
            if tier is not None:
                # What failed will not come: the tier is over, so nothing of it is left to do.
                self.done_total += max(tier.bytes - self.done_tier, 0)
                self.done_tier = tier.bytes
                self.verified_total = sum(t.bytes for t in self.tiers[: tier.number])

    # -- what the views show ------------------------------------------------------------------

    @property
    def bytes_total(self) -> int:
        return sum(t.bytes for t in self.tiers)

    def _time_left(self, fetch_left: int, check_left: int) -> float | None:
        if fetch_left + check_left == 0:
            return 0.0
        fetch_rate = self.fetch.rate()
        if fetch_rate is None:
            return None
        check_rate = self.check.rate() or fetch_rate
        return fetch_left / fetch_rate + check_left / check_rate

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            tier = self.current
            tier_total = tier.bytes if tier else 0
            fetch_left = max(self.bytes_total - self.done_total, 0)
            tier_fetch_left = max(tier_total - self.done_tier, 0) if tier else 0
            check_left = tier_check_left = 0
            if self.verifies:
                check_left = max(self.bytes_total - self.verified_total, 0)
                before = sum(t.bytes for t in self.tiers[: tier.number - 1]) if tier else 0
                tier_checked = max(self.verified_total - before, 0)
                tier_check_left = max(tier_total - tier_checked, 0) if tier else 0
            rate, check_rate = self.fetch.rate(), self.check.rate()
            eta_tier = self._time_left(tier_fetch_left, tier_check_left)
            eta_total = self._time_left(fetch_left, check_left)
            return {
                "elapsed_seconds": round(self.clock() - self.started, 2),
                "phase": self.phase,
                "tier": tier.number if tier else None,
                "tiers": len(self.tiers),
                "tier_name": tier.name if tier else None,
                "tier_bytes_done": self.done_tier,
                "tier_bytes_total": tier_total,
                "bytes_done": self.done_total,
                "bytes_total": self.bytes_total,
                "bytes_verified": self.verified_total if self.verifies else None,
                "throughput_bytes_per_second": round(rate) if rate else None,
                "verify_bytes_per_second": round(check_rate) if check_rate else None,
                "eta_tier_seconds": round(eta_tier, 3) if eta_tier is not None else None,
                "eta_total_seconds": round(eta_total, 3) if eta_total is not None else None,
            }


class JsonLines(RestoreReport):
    """--json-progress: JSON lines on stdout, a progress line every `interval` seconds."""

    def __init__(self, interval: float, out: TextIO | None = None, *, verifies: bool = False):
        super().__init__(verifies=verifies)
        self.interval = interval
        self.out = out or sys.stdout
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="json-progress", daemon=True)

    def emit(self, kind: str, **fields: Any) -> None:
        with self._write_lock:
            self.out.write(json.dumps({"type": kind, **fields}) + "\n")
            self.out.flush()

    def _tick(self) -> None:
        # A line every interval even when nothing moves: a stalled restore shows as stalled.
        while not self._stop.wait(self.interval):
            self.emit("progress", **self.snapshot())

    def planned(self, tiers: list[TierPlan]) -> None:
        super().planned(tiers)
        self.emit(
            "plan",
            bytes_total=self.bytes_total,
            tiers=[
                {"tier": t.number, "name": t.name, "files": len(t.files), "bytes": t.bytes}
                for t in tiers
            ],
        )
        self._ticker.start()

    def tier_started(self, tier: TierPlan) -> None:
        super().tier_started(tier)
        self.emit("tier_started", tier=tier.number, name=tier.name, bytes=tier.bytes)
        self.emit("progress", **self.snapshot())

    def verifying(self, tier: TierPlan) -> None:
        super().verifying(tier)
        self.emit("verifying", tier=tier.number, name=tier.name)

    def tier_finished(self, result: TierResult) -> None:
        super().tier_finished(result)
        self.emit("tier_done", **tier_document(result))
        self.emit("progress", **self.snapshot())

    def close(self) -> None:
        self._stop.set()
        if self._ticker.is_alive():
            self._ticker.join()


class TierLines(RestoreReport):
    """The terminal: the bar (when there is one), and a line as each tier is done."""

    def __init__(self, bar: Progress, out: TextIO | None = None, *, verifies: bool = False):
        super().__init__(bar, verifies=verifies)
        self.out = out or sys.stdout

    def tier_finished(self, result: TierResult) -> None:
        super().tier_finished(result)
        state = self.snapshot()
        left = [t for t in self.tiers if t.number > result.number]
        what = "verified" if result.outcome == "PASS" else f"{result.problems} file(s) FAILED"
        line = f"tier {result.number}/{len(self.tiers)} {result.name}: " + (
            f"{result.files} file(s), {human_bytes(result.bytes)} in "
            f"{human_seconds(result.seconds)}, {what}"
            if result.files or result.symlinks or result.problems
            else "nothing to restore"
        )
        if result.note:
            line += f" ({result.note})"
        if left:
            eta = state["eta_total_seconds"]
            line += f"; {len(left)} tier(s) left, {human_bytes(sum(t.bytes for t in left))}"
            rate = state["throughput_bytes_per_second"]
            line += (
                f", about {human_seconds(eta)} at {human_bytes(rate)}/s"
                if eta is not None
                else ", time left not measured yet"
            )
        print(line, file=self.out, flush=True)


def tier_document(result: TierResult) -> dict[str, Any]:
    return {
        "tier": result.number,
        "name": result.name,
        "files": result.files,
        "symlinks": result.symlinks,
        "bytes": result.bytes,
        "verified_files": result.verified,
        "bytes_downloaded": result.bytes_downloaded,
        "bytes_kept": result.bytes_kept,
        "seconds": round(result.seconds, 3),
        "problems": result.problems,
        "note": result.note,
        "outcome": result.outcome,
    }
