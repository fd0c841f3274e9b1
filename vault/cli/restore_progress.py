"""How a restore reports as it goes: an honest time left, on the terminal and as JSON lines.

The time left is measured, never assumed: bytes restored over the last WINDOW seconds of wall
time (verification pauses included, so the estimate does not forget them), applied to what is
still to restore, per tier and in total. Bytes a resume found already in place are not counted
as speed (they were checked, not fetched). Until something has been restored the time left is
null ("measuring"), not a guess.

`--json-progress` writes one JSON object per line on stdout: "plan" (the tiers and their
sizes), "tier_started", "progress" (every INTERVAL seconds, and at every tier's start and
end), "verifying", "tier_done", and finally "result" (the document --json prints).
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

WINDOW = 30.0  # seconds of history the speed is measured over


class RateMeter:
    """Bytes per second over the last WINDOW seconds (from the start, while younger)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self.total = 0
        self._samples: deque[tuple[float, int]] = deque([(self.started, 0)])

    def add(self, amount: int) -> None:
        self.total += amount
        now = self.clock()
        if now - self._samples[-1][0] >= 0.25:  # a sample per quarter second bounds the memory
            self._samples.append((now, self.total))
        while len(self._samples) > 2 and now - self._samples[1][0] >= WINDOW:
            self._samples.popleft()

    def rate(self) -> float | None:
        then, done_then = self._samples[0]
        span = self.clock() - then
        done = self.total - done_then
        return done / span if done > 0 and span > 0 else None


class RestoreReport:
    """Both a Progress (bytes as they are written) and a RestoreMonitor (tiers): keeps the
    counts every view needs. Thread-safe: fetch threads advance it."""

    def __init__(self, bar: Progress | None = None) -> None:
        self.bar = bar or NoProgress()
        self.meter = RateMeter()
        self.lock = threading.Lock()
        self.tiers: list[TierPlan] = []
        self.current: TierPlan | None = None
        self.phase = "planning"
        self.done_total = 0  # content bytes restored or found in place, all tiers
        self.done_tier = 0
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
                    self.meter.add(amount - unmetered)

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

    def kept(self, amount: int) -> None:
        # The advance that follows counts as done, but not as speed: it was checked, not fetched.
        with self.lock:
            self._unmetered += amount

    def verifying(self, tier: TierPlan) -> None:
        with self.lock:
            self.phase = "verify"

    def tier_finished(self, result: TierResult) -> None:
        with self.lock:
            self.finished.append(result)
            self.phase = "between tiers"

    # -- what the views show ------------------------------------------------------------------

    @property
    def bytes_total(self) -> int:
        return sum(t.bytes for t in self.tiers)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            rate = self.meter.rate()
            tier = self.current
            tier_total = tier.bytes if tier else 0
            left_total = max(self.bytes_total - self.done_total, 0)
            left_tier = max(tier_total - self.done_tier, 0) if self.phase == "restore" else 0
            return {
                "elapsed_seconds": round(self.meter.clock() - self.meter.started, 2),
                "phase": self.phase,
                "tier": tier.number if tier else None,
                "tiers": len(self.tiers),
                "tier_name": tier.name if tier else None,
                "tier_bytes_done": self.done_tier if self.phase == "restore" else tier_total,
                "tier_bytes_total": tier_total,
                "bytes_done": self.done_total,
                "bytes_total": self.bytes_total,
                "throughput_bytes_per_second": round(rate) if rate else None,
                "eta_tier_seconds": round(left_tier / rate, 3) if rate else None,
                "eta_total_seconds": round(left_total / rate, 3) if rate else None,
            }


class JsonLines(RestoreReport):
    """--json-progress: JSON lines on stdout, a progress line every `interval` seconds."""

    def __init__(self, interval: float, out: TextIO | None = None) -> None:
        super().__init__()
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

    def __init__(self, bar: Progress, out: TextIO | None = None) -> None:
        super().__init__(bar)
        self.out = out or sys.stdout

    def tier_finished(self, result: TierResult) -> None:
        super().tier_finished(result)
        state = self.snapshot()
        left = [t for t in self.tiers if t.number > result.number]
        what = "verified" if result.outcome == "PASS" else f"{result.problems} problem(s)"
        line = (
            f"tier {result.number}/{len(self.tiers)} {result.name}: {result.files} file(s), "
            f"{human_bytes(result.bytes)} in {human_seconds(result.seconds)}, {what}"
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
