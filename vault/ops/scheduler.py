"""`vault schedule run`: the nightly loop, built on the `schedule` library.

Jobs run one at a time in the order they fall due. At start, a backup missed while the machine
was off (the newest snapshot older than the RPO) is caught up first, and reported as missed. A
failed job is retried once after `retry_after_minutes`, then alerts. `stop()` (SIGTERM) ends the
wait at once and passes SIGTERM to a running job, which stops at a safe point.

Time is injected (`clock` returns local wall time, `wait` sleeps until stopped) so that tests
drive days of schedule in milliseconds. The `schedule` library reads `datetime.datetime.now()`
itself; while the loop calls into it, `_library_clock` points the library's `datetime` at ours.
"""

from __future__ import annotations

import contextlib
import datetime as _datetime
import logging
import types
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import schedule

from vault.ops.jobrunner import Outcome
from vault.policy.files import SchedulePolicy

log = logging.getLogger("vault.schedule")

MAX_IDLE_SECONDS = 300.0  # wake at least this often (the clock may jump after a suspend)


class Runner(Protocol):
    def run(self, job: str) -> Outcome: ...

    def status(self) -> dict[str, Any] | None: ...

    def refresh_metrics(self) -> None: ...

    def record(self, job: str, kind: str, reason: str) -> None: ...

    def terminate(self) -> None: ...


AlertFn = Callable[[str, str, str, str], None]  # (job, kind, error, advice)


@contextlib.contextmanager
def _library_clock(clock: Callable[[], _datetime.datetime]) -> Iterator[None]:
    class _Now(_datetime.datetime):
        @classmethod
        def now(cls, tz: _datetime.tzinfo | None = None) -> Any:
            return clock()

    shim = types.SimpleNamespace(
        datetime=_Now, timedelta=_datetime.timedelta, time=_datetime.time, date=_datetime.date
    )
    real = vars(schedule)["datetime"]
    setattr(schedule, "datetime", shim)  # noqa: B010 - the library's module-level name
    try:
        yield
    finally:
        setattr(schedule, "datetime", real)  # noqa: B010


class Scheduler:
    def __init__(
        self,
        policy: SchedulePolicy,
        runner: Runner,
        alert: AlertFn,
        clock: Callable[[], _datetime.datetime] = _datetime.datetime.now,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        self.policy = policy
        self.runner = runner
        self.alert = alert
        self.clock = clock
        self._stopped = False
        self._wait = wait
        self.library = schedule.Scheduler()
        with _library_clock(clock):
            every = self.library.every
            every().day.at(policy.backup_at).do(self.run_job, "backup")
            getattr(every(), policy.check_day).at(policy.check_at).do(self.run_job, "check")
            every().day.at(policy.drill_at).do(self.run_job, "drill")
            every().day.at(policy.keys_at).do(self.run_job, "keys")
            getattr(every(), policy.maintenance_day).at(policy.maintenance_at).do(
                self.run_job, "maintenance"
            )

    # -- control -----------------------------------------------------------------------------

    def stop(self) -> None:
        self._stopped = True
        self.runner.terminate()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def sleep(self, seconds: float) -> bool:
        """Wait up to `seconds`; True when stopped meanwhile."""
        if self._stopped:
            return True
        if self._wait is not None:
            return self._wait(seconds) or self._stopped
        raise RuntimeError("Scheduler needs a wait function to sleep")

    # -- jobs --------------------------------------------------------------------------------

    def run_job(self, job: str) -> Outcome:
        """Run `job` now, retrying once after a failure, alerting if the retry fails too. A
        backup is followed by the copy into the replicas (a partial backup's snapshot too)."""
        outcome = self._retried(job)
        saved = outcome.ok or outcome.exit_code == 3  # a snapshot was written
        if job == "backup" and self.policy.copy_to and saved and not self._stopped:
            self._retried("copy")
        return outcome

    def _retried(self, job: str) -> Outcome:
        outcome = self._attempt(job)
        if outcome.ok or outcome.interrupted or self._stopped:
            return outcome
        minutes = self.policy.retry_after_minutes
        log.warning("%s failed (%s); retrying in %d min", job, outcome.error, minutes)
        if self.sleep(minutes * 60):
            return outcome
        outcome = self._attempt(job)
        if not outcome.ok and not outcome.interrupted and not self._stopped:
            log.error("%s failed again: %s", job, outcome.error)
            self.alert(job, "failed", outcome.error, outcome.advice)
        return outcome

    def _attempt(self, job: str) -> Outcome:
        log.info("%s: starting", job)
        outcome = self.runner.run(job)
        if outcome.interrupted:
            log.info("%s: stopped on request; it continues at its next time", job)
        elif outcome.ok:
            log.info("%s: done, %s", job, outcome.skipped or outcome.summary or "ok")
        else:
            log.error("%s: failed with exit code %d: %s", job, outcome.exit_code, outcome.error)
        if not self._stopped:
            self.runner.refresh_metrics()
        return outcome

    def catch_up(self) -> None:
        """Run the backup now when the newest snapshot is older than the RPO (or missing)."""
        doc = self.runner.status()
        if doc is None:
            log.warning("the repository status could not be read: running a backup now")
            self.run_job("backup")
            return
        last = doc.get("last_backup") or {}
        age, rpo = last.get("age_seconds"), float(doc.get("rpo_seconds", 24 * 3600))
        if age is None:
            log.info("there is no backup yet: running the first one now")
            self.run_job("backup")
            return
        if age <= rpo:
            log.info("the last backup is %.1f h old, within the RPO", age / 3600)
            return
        missed = (
            f"the last backup is {age / 3600:.1f} h old, more than the RPO of {rpo / 3600:.0f} h"
        )
        log.warning("%s: running a catch-up backup now", missed)
        self.runner.record("backup", "missed", missed)
        self.alert(
            "backup",
            "missed",
            missed,
            "a catch-up backup is running now; find out why the machine or the scheduler was "
            "not running at the backup time",
        )
        self.run_job("backup")

    # -- the loop ----------------------------------------------------------------------------

    def run_pending(self) -> None:
        with _library_clock(self.clock):
            self.library.run_pending()

    def idle_seconds(self) -> float:
        with _library_clock(self.clock):
            idle = self.library.idle_seconds
        return MAX_IDLE_SECONDS if idle is None else min(max(idle, 0.0), MAX_IDLE_SECONDS)

    def next_runs(self) -> list[tuple[str, _datetime.datetime]]:
        return sorted(
            (
                (str(job.job_func.args[0]), job.next_run)
                for job in self.library.jobs
                if job.next_run is not None and job.job_func is not None
            ),
            key=lambda pair: pair[1],
        )

    def run_forever(self) -> None:
        for name, when in self.next_runs():
            log.info("next %s: %s", name, when.strftime("%a %Y-%m-%d %H:%M"))
        self.catch_up()
        while not self._stopped:
            self.run_pending()
            if self.sleep(self.idle_seconds()):
                break
        log.info("scheduler stopped")
