"""The scheduler's decisions with an injected clock: days of schedule run in milliseconds.

The runner here records which job ran when (the jobs themselves are tested end to end in
test_schedule_run.py); the clock only moves when the scheduler waits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from vault.ops.jobrunner import Outcome
from vault.ops.scheduler import Scheduler
from vault.policy.files import SchedulePolicy

SATURDAY = datetime(2026, 11, 28, 0, 0)  # a Saturday: maintenance day by default


@dataclass
class FakeRunner:
    clock: list[datetime]
    backup_age_seconds: float | None = 3600.0
    failures: dict[str, int] = field(default_factory=dict)  # job -> failures before success
    calls: list[tuple[str, datetime]] = field(default_factory=list)
    recorded: list[tuple[str, str]] = field(default_factory=list)  # (job, kind) for the audit log
    job_minutes: int = 10
    on_run: Any = None

    def run(self, job: str) -> Outcome:
        self.calls.append((job, self.clock[0]))
        self.clock[0] += timedelta(minutes=self.job_minutes)  # jobs take time
        if self.on_run:
            return self.on_run(job)  # type: ignore[no-any-return]
        if self.failures.get(job, 0) > 0:
            self.failures[job] -= 1
            return Outcome(False, 10, "repository s3://bucket/x cannot be reached")
        return Outcome(True)

    def status(self) -> dict[str, Any] | None:
        last = None if self.backup_age_seconds is None else {"age_seconds": self.backup_age_seconds}
        return {"last_backup": last, "rpo_seconds": 24 * 3600}

    def refresh_metrics(self) -> None:
        pass

    def record(self, job: str, kind: str, reason: str) -> None:
        self.recorded.append((job, kind))

    def terminate(self) -> None:
        pass


def _run(
    policy: SchedulePolicy, runner: FakeRunner, clock: list[datetime], until: datetime
) -> list[tuple[str, str, str, str]]:
    alerts: list[tuple[str, str, str, str]] = []
    scheduler: Scheduler

    def wait(seconds: float) -> bool:
        assert seconds >= 0
        clock[0] += timedelta(seconds=max(seconds, 1))
        if clock[0] >= until:
            scheduler.stop()
            return True
        return False

    scheduler = Scheduler(
        policy,
        runner,
        lambda *alert: alerts.append(alert),
        clock=lambda: clock[0],
        wait=wait,
    )
    scheduler.run_forever()
    return alerts


def _jobs(runner: FakeRunner) -> list[tuple[str, str]]:
    return [(job, when.strftime("%a %H:%M")) for job, when in runner.calls]


def test_two_days_run_each_job_at_its_time_in_order() -> None:
    clock = [SATURDAY]
    runner = FakeRunner(clock)
    alerts = _run(SchedulePolicy(), runner, clock, SATURDAY + timedelta(days=2))
    assert _jobs(runner) == [
        ("backup", "Sat 01:30"),
        ("maintenance", "Sat 03:00"),
        ("drill", "Sat 05:00"),
        ("keys", "Sat 06:00"),
        ("backup", "Sun 01:30"),
        ("check", "Sun 04:00"),
        ("drill", "Sun 05:00"),
        ("keys", "Sun 06:00"),
    ]
    assert alerts == []


def test_a_backup_missed_while_off_is_caught_up_first_and_reported_as_missed() -> None:
    clock = [SATURDAY + timedelta(hours=12)]  # started at noon, after the backup time
    runner = FakeRunner(clock, backup_age_seconds=36 * 3600)
    alerts = _run(SchedulePolicy(), runner, clock, SATURDAY + timedelta(days=1))
    assert _jobs(runner)[0] == ("backup", "Sat 12:00")
    assert [(job, kind) for job, kind, _, _ in alerts] == [("backup", "missed")]
    assert "36.0 h old" in alerts[0][2] and "RPO of 24 h" in alerts[0][2]
    assert runner.recorded == [("backup", "missed")]  # counted in the evidence pack too


def test_no_catch_up_when_the_last_backup_is_within_the_rpo() -> None:
    clock = [SATURDAY + timedelta(hours=12)]
    runner = FakeRunner(clock, backup_age_seconds=10 * 3600)
    _run(SchedulePolicy(), runner, clock, SATURDAY + timedelta(hours=20))
    assert runner.calls == []


def test_jobs_due_while_the_machine_slept_run_once_each_in_their_order() -> None:
    clock = [SATURDAY]
    runner = FakeRunner(clock, job_minutes=1)
    scheduler = Scheduler(SchedulePolicy(), runner, lambda *a: None, clock=lambda: clock[0])
    clock[0] = SATURDAY + timedelta(hours=7)  # woke up after every job's time
    scheduler.run_pending()
    assert [job for job, _ in runner.calls] == ["backup", "maintenance", "drill", "keys"]
    scheduler.run_pending()
    assert len(runner.calls) == 4  # not run twice


def test_a_failed_job_is_retried_once_after_the_delay_then_alerts() -> None:
    clock = [SATURDAY]
    runner = FakeRunner(clock, failures={"backup": 5})
    policy = SchedulePolicy(retry_after_minutes=15)
    alerts = _run(policy, runner, clock, SATURDAY + timedelta(hours=2))
    backups = [when for job, when in runner.calls if job == "backup"]
    assert len(backups) == 2
    assert backups[1] - backups[0] == timedelta(minutes=10 + 15)  # job time + retry delay
    assert len(alerts) == 1
    job, kind, error, advice = alerts[0]
    assert (job, kind) == ("backup", "failed")
    assert "cannot be reached" in error and "check the disk, network, bucket" in advice


def test_a_job_that_succeeds_on_retry_does_not_alert() -> None:
    clock = [SATURDAY]
    runner = FakeRunner(clock, failures={"backup": 1})
    alerts = _run(SchedulePolicy(), runner, clock, SATURDAY + timedelta(hours=2))
    assert [job for job, _ in runner.calls] == ["backup", "backup"]
    assert alerts == []


def test_stop_during_a_job_ends_the_loop_without_retry_or_alert() -> None:
    clock = [SATURDAY]
    scheduler: Scheduler

    def stopped_mid_job(job: str) -> Outcome:
        scheduler.stop()
        return Outcome(False, 130, "backup stopped on request", interrupted=True)

    runner = FakeRunner(clock, on_run=stopped_mid_job)
    alerts: list[object] = []
    waits: list[datetime] = []

    def wait(seconds: float) -> bool:
        waits.append(clock[0])
        clock[0] += timedelta(seconds=seconds)
        return False

    scheduler = Scheduler(
        SchedulePolicy(), runner, lambda *a: alerts.append(a), clock=lambda: clock[0], wait=wait
    )
    scheduler.run_forever()
    assert [job for job, _ in runner.calls] == ["backup"] and alerts == []
    # The loop noticed the stop at once instead of waiting for the next job.
    assert all(when <= runner.calls[0][1] for when in waits)
