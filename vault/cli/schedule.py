"""`vault schedule run | alert-test`: the unattended nightly loop and a check of the alert route."""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from vault.cli.support import opt, usage
from vault.errors import UsageError
from vault.ops.alerts import Alerter, Scrubber, make_alert, secrets_of
from vault.ops.jobrunner import JOBS, JobRunner
from vault.ops.scheduler import Scheduler
from vault.policy.databases import load_database_sources
from vault.policy.files import (
    AlertPolicy,
    load_backup_policy,
    load_drill_policy,
    load_schedule_policy,
    policy_dir,
)

LOG_FILE_BYTES = 5 * 1024 * 1024
LOG_FILES_KEPT = 5


def add_schedule_parsers(
    common: argparse.ArgumentParser, command: Callable[..., argparse.ArgumentParser]
) -> None:
    p = command("schedule", "run backups, checks, drills and pruning unattended", usage_of)
    sub = p.add_subparsers(dest="schedule_command", metavar="ACTION", required=True)
    help_dir = (
        "directory with backup.toml, schedule.toml, retention.toml, drill.toml, keys.toml "
        "(default: $VAULT_POLICY_DIR)"
    )
    r = sub.add_parser(
        "run",
        parents=[common],
        help="run the schedule in the foreground until SIGTERM (systemd, cron: see "
        "docs/operations.md)",
        description="Run the jobs of schedule.toml at their times, one at a time. At start, a "
        "backup missed while the machine was off is caught up. A failed job is retried once, "
        "then alerts. SIGTERM stops the running job at a safe point and exits 0.",
    )
    r.set_defaults(func=cmd_schedule_run)
    r.add_argument("--policy-dir", metavar="DIR", help=help_dir)
    r.add_argument(
        "--once",
        metavar="JOB",
        choices=JOBS,
        help=f"run one job now (retry and alert as scheduled) and exit: {', '.join(JOBS)}",
    )
    t = sub.add_parser(
        "alert-test",
        parents=[common],
        help="send a test alert through every channel in schedule.toml [alerts]",
        description="send a test alert through every channel in schedule.toml [alerts]",
    )
    t.set_defaults(func=cmd_alert_test)
    t.add_argument("--policy-dir", metavar="DIR", help=help_dir)


def usage_of(args: argparse.Namespace) -> int:
    return usage("schedule")


def _setup_logging(log_file: str) -> logging.Logger:
    log = logging.getLogger("vault.schedule")
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(
            logging.handlers.RotatingFileHandler(
                log_file, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILES_KEPT, encoding="utf-8"
            )
        )
    for handler in handlers:
        handler.setFormatter(formatter)
        log.addHandler(handler)
    return log


def _scrubber(alerts: AlertPolicy) -> Scrubber:
    return Scrubber([*secrets_of(alerts), os.environ.get("VAULT_PASSWORD", "")])


def _child_env(args: argparse.Namespace) -> dict[str, str]:
    """The command line's repository and passphrase file reach the jobs through the
    environment (a passphrase command cannot: it would run for every job)."""
    if opt(args, "password_command"):
        raise UsageError(
            "schedule run takes the passphrase from password_file in backup.toml, "
            "--password-file or $VAULT_PASSWORD_FILE, not --password-command"
        )
    env = dict(os.environ)
    if opt(args, "repo"):
        env["VAULT_REPO"] = str(args.repo)
    if opt(args, "password_file"):
        env["VAULT_PASSWORD_FILE"] = str(Path(args.password_file).resolve())
    return env


def cmd_schedule_run(args: argparse.Namespace) -> int:
    directory = policy_dir(args.policy_dir)
    backup_policy = load_backup_policy(directory)
    schedule_policy, alert_policy = load_schedule_policy(directory)
    drill_policy = load_drill_policy(directory)
    env = _child_env(args)
    where = f"{directory / 'backup.toml'}" if directory else "backup.toml (--policy-dir)"
    # [[database]] tables are checked now: a mistake stops the scheduler at start, not at 01:30.
    database_sources = load_database_sources(directory)
    if (
        not backup_policy.sources
        and not backup_policy.pacs_sources
        and not database_sources
        and args.once
        in (
            None,
            "backup",
        )
    ):
        raise UsageError(f"{where} names no sources: say what to back up (policies/backup.toml)")
    if not (backup_policy.repository or env.get("VAULT_REPO")):
        raise UsageError(f"no repository: set repository in {where}, --repo or $VAULT_REPO")
    log = _setup_logging(schedule_policy.log_file)
    scrub = _scrubber(alert_policy)
    runner = JobRunner(backup_policy, schedule_policy, drill_policy, directory, scrub, env)
    alerter = Alerter(alert_policy)
    runner.record_policies()

    def alert(job: str, kind: str, error: str, advice: str) -> None:
        delivered = alerter.send(make_alert(job, error, advice, scrub, kind))
        log.info("alert for %s %s sent through %d channel(s)", job, kind, delivered)

    stopping = threading.Event()
    scheduler = Scheduler(schedule_policy, runner, alert, wait=stopping.wait)

    def on_signal(signum: int, frame: object) -> None:
        log.info("received %s: stopping after the current step", signal.Signals(signum).name)
        stopping.set()
        scheduler.stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        if args.once:
            outcome = scheduler.run_job(args.once)
            return 0 if outcome.ok else (outcome.exit_code or 1)
        log.info("vault schedule started (policies: %s)", directory or "built-in defaults")
        scheduler.run_forever()
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_alert_test(args: argparse.Namespace) -> int:
    directory = policy_dir(args.policy_dir)
    _, alert_policy = load_schedule_policy(directory)
    if not alert_policy.configured:
        raise UsageError("schedule.toml has no [alerts] channel (command, webhook_url, email_to)")
    _setup_logging("")
    scrub = _scrubber(alert_policy)
    alert = make_alert(
        "alert-test",
        "this is a test alert; nothing failed",
        "nothing to do: alerts reach you",
        scrub,
        kind="test",
    )
    delivered = Alerter(alert_policy).send(alert)
    print(f"test alert delivered through {delivered} channel(s)")
    return 0 if delivered else 1
