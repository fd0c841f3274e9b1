"""The scheduler's jobs, each run as `vault …` child processes.

A child process per job keeps a long-running scheduler small and healthy: memory a backup used
is returned, a crash in one job cannot take the loop down, and SIGTERM is simply passed on (a
backup then stops at a safe point). The jobs read their outcome from the child's exit code and
`--json` document. Child output is logged only after scrubbing (no secrets, no paths).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vault.ops.alerts import Scrubber
from vault.policy.files import BackupPolicy, DrillPolicy, SchedulePolicy

log = logging.getLogger("vault.schedule")

JOBS = ("backup", "copy", "check", "drill", "full-drill", "keys", "maintenance")

# What to do, by the exit code of the failed `vault` command (vault.errors).
ADVICE = {
    1: "run the same command by hand to see the details; then `vault check`",
    2: "a policy or option is wrong: fix the file the error names",
    3: "some source files or database dumps could not be read: run `vault backup` by hand "
    "to list them, fix their permissions, the program holding them, or the database login",
    10: "the repository cannot be reached: check the disk, network, bucket and the "
    "repository setting in backup.toml",
    11: "the repository is locked by another vault: if none is running, `vault unlock`",
    12: "the passphrase or key was refused: check password_file in backup.toml",
    130: "the job was interrupted; it runs again at its next time",
}


@dataclass(frozen=True)
class Outcome:
    ok: bool
    exit_code: int = 0
    error: str = ""  # scrubbed, one line
    skipped: str = ""  # why nothing needed doing
    interrupted: bool = False
    summary: str = ""  # what it did, for the log (ids and counts only)

    @property
    def advice(self) -> str:
        return ADVICE.get(self.exit_code, ADVICE[1])


@dataclass(frozen=True)
class _Run:
    code: int
    doc: Any  # the --json document, or None
    error: str


# What the pre-backup hook gets of the scheduler's environment: enough to run a program, and
# never the repository's passphrase, its storage credentials or anything else vault was given.
HOOK_ENVIRONMENT = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM")


def hook_environment(env: dict[str, str], extra: tuple[str, ...] = ()) -> dict[str, str]:
    """The scrubbed environment of a hook: HOOK_ENVIRONMENT, the locale (LC_*), and the
    variables backup.toml names in pre_hook_env (a database dump's own settings)."""
    allowed = set(HOOK_ENVIRONMENT) | set(extra)
    return {k: v for k, v in env.items() if k in allowed or k.startswith("LC_")}


class JobRunner:
    def __init__(
        self,
        backup: BackupPolicy,
        schedule: SchedulePolicy,
        drill: DrillPolicy,
        policy_dir: Path | None,
        scrub: Scrubber,
        env: dict[str, str] | None = None,
    ) -> None:
        self.backup_policy = backup
        self.schedule = schedule
        self.drill_policy = drill
        self.policy_dir = policy_dir
        self.scrub = scrub
        self.env = dict(env if env is not None else os.environ)
        if backup.repository:
            self.env["VAULT_REPO"] = backup.repository
        if backup.password_file:
            self.env["VAULT_PASSWORD_FILE"] = backup.password_file
        self._child: subprocess.Popen[bytes] | None = None
        self._guard = threading.Lock()
        self.stopping = False

    # -- running `vault` ---------------------------------------------------------------------

    def _policy_args(self) -> list[str]:
        return ["--policy-dir", str(self.policy_dir)] if self.policy_dir else []

    def vault(self, *args: str) -> _Run:
        argv = [sys.executable, "-m", "vault", *args, "--json", "--quiet"]
        with self._guard:
            if self.stopping:
                return _Run(130, None, "stopped before it started")
            self._child = subprocess.Popen(
                argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        out, err = self._child.communicate()
        code = self._child.returncode
        with self._guard:
            self._child = None
        error = ""
        for line in err.decode(errors="replace").splitlines():
            clean = self.scrub(line)
            if line.startswith("vault: error") or line.startswith("vault: internal error"):
                error = clean.removeprefix("vault: error: ").removeprefix("vault: ")
            if line.startswith("vault:"):
                log.info("  %s", clean)
        try:
            doc = json.loads(out) if out.strip() else None
        except ValueError:
            doc = None
        if code < 0:
            error = error or f"killed by signal {-code}"
        return _Run(code, doc, error or (f"exit code {code}" if code else ""))

    def terminate(self) -> None:
        """Stop: SIGTERM to the running child (a backup finishes its pack), no new children."""
        with self._guard:
            self.stopping = True
            if self._child is not None and self._child.poll() is None:
                self._child.send_signal(signal.SIGTERM)

    def status(self) -> dict[str, Any] | None:
        run = self.vault("status", *self._policy_args())
        return run.doc if isinstance(run.doc, dict) else None  # exit 1 only means FAIL

    def refresh_metrics(self) -> None:
        if self.schedule.metrics_file:
            self.vault("status", *self._policy_args(), "--metrics-file", self.schedule.metrics_file)

    # -- the jobs ----------------------------------------------------------------------------

    def run(self, job: str) -> Outcome:
        method = getattr(self, "_" + job.replace("-", "_"))
        outcome: Outcome = method()
        if outcome.exit_code == 130 and self.stopping:
            outcome = Outcome(False, 130, outcome.error, interrupted=True)
        return outcome

    @staticmethod
    def _outcome(run: _Run) -> Outcome:
        return Outcome(
            run.code == 0, run.code, "" if run.code == 0 else run.error, summary=_summary(run.doc)
        )

    def _pre_hook(self) -> Outcome | None:
        hook = self.backup_policy.pre_hook
        if not hook:
            return None
        timeout = self.backup_policy.pre_hook_timeout_seconds
        log.info("running the pre-backup hook")
        try:
            completed = subprocess.run(
                shlex.split(hook),
                env=hook_environment(self.env, self.backup_policy.pre_hook_env),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return Outcome(False, 1, f"the pre-backup hook did not finish within {timeout} s")
        except OSError as exc:
            return Outcome(False, 1, f"the pre-backup hook could not start: {exc.strerror}")
        if completed.returncode != 0:
            return Outcome(
                False, 1, f"the pre-backup hook failed with exit code {completed.returncode}"
            )
        return None

    def _backup(self) -> Outcome:
        p = self.backup_policy
        # backup.toml's [[database]] tables are read by the backup child itself (a mistake in
        # them is then that child's one-line error), dumped into the files' snapshot.
        with_databases = bool(self.policy_dir) and _has_database_tables(self.policy_dir)
        if not p.sources and not p.pacs_sources and not with_databases:
            return Outcome(False, 2, "backup.toml names no sources")
        failed = self._pre_hook()
        if failed:
            # The backup never ran, so it left no event of its own: the log must still count it.
            self.record("backup", "failed", failed.error)
            return failed
        common: list[str] = []
        for tag in p.tags:
            common += ["--tag", tag]
        if p.host:
            common += ["--host", p.host]
        outcome = None
        if p.sources or with_databases:
            args = ["backup", *p.sources, *common]
            if with_databases:
                args.append("--policy-databases")
            for pattern in p.excludes:
                args += ["--exclude", pattern]
            outcome = self._outcome(self.vault(*args, *self._policy_args()))
        # Each PACS is its own snapshot; one that fails does not keep the others from running,
        # and the job fails with the first failure.
        for name in p.pacs_sources:
            done = self._outcome(self.vault("backup", "--from-pacs", name, *common,
                                            *self._policy_args()))  # fmt: skip
            if outcome is None or (outcome.ok and not done.ok):
                outcome = done
        assert outcome is not None
        return outcome

    def _copy(self) -> Outcome:
        """`vault copy` into each replica schedule.toml names; the first failure is the job's,
        and one replica failing does not keep the others from their copy."""
        if not self.schedule.copy_to:
            return Outcome(True, 0, "", skipped="no replica in schedule.toml (copy_to)")
        if self.schedule.copy_key_file:
            opens = ["--to-key-file", self.schedule.copy_key_file]
        else:
            secret = self.schedule.copy_password_file or self.backup_policy.password_file
            opens = ["--to-password-file", secret] if secret else []
        outcome = None
        for url in self.schedule.copy_to:
            args = ["copy", "--to", url, *opens]
            done = self._outcome(self.vault(*args))
            if outcome is None or (outcome.ok and not done.ok):
                outcome = done
        assert outcome is not None
        return outcome

    def record_policies(self) -> None:
        """Put the policy files this scheduler runs with into the audit log when they changed
        since the last run (through a `vault` child: it compares and records)."""
        if self.policy_dir is None:
            return
        done = self.vault("audit", "--record-policies", str(self.policy_dir))
        if done.code != 0:
            log.warning("could not record the policy files in the audit log: %s", done.error)

    def record(self, job: str, kind: str, reason: str) -> None:
        """Put a scheduled job that failed before it ran, or was missed, into the audit log
        (through a `vault` child, like every job: the scheduler holds no key)."""
        done = self.vault(
            "audit", "--record-scheduled", job, "--kind", kind, "--reason", self.scrub(reason)
        )
        if done.code != 0:
            log.warning(
                "could not record the %s %s job in the audit log: %s", kind, job, done.error
            )

    def _check(self) -> Outcome:
        return self._outcome(
            self.vault("check", "--read-data-subset", str(self.schedule.check_read_percent))
        )

    def _drill_args(self, *extra: str) -> list[str]:
        return [
            "drill",
            *extra,
            *self._policy_args(),
            "--operator",
            "vault schedule (unattended)",
        ]

    def _drill(self) -> Outcome:
        if self._full_drill_due():
            return self._full_drill()
        doc = self.status()
        if doc is not None and not doc.get("drill_overdue"):
            return Outcome(True, skipped="the last drill is recent enough")
        return self._outcome(self.vault(*self._drill_args()))

    def _full_drill_due(self) -> bool:
        run = self.vault("drill", "history")
        if not isinstance(run.doc, dict) or not self.schedule.full_drill_every_days:
            return False  # cannot tell: the sampled path runs and reports the error
        full = [r for r in run.doc.get("drills", []) if str(r["scenario"]).startswith("full")]
        if not full:
            return True
        started = datetime.fromisoformat(str(full[-1].get("started")))
        age = (datetime.now(UTC) - started).total_seconds()
        return age > self.schedule.full_drill_every_days * 86400

    def _full_drill(self) -> Outcome:
        return self._outcome(self.vault(*self._drill_args("--full")))

    def _keys(self) -> Outcome:
        doc = self.status()
        if doc is None:
            return Outcome(False, 10, "status could not be read")
        if doc["keys"]["rotation"] != "overdue":
            return Outcome(True, skipped=f"key rotation is {doc['keys']['rotation']}")
        if not self.schedule.rotate_keys:
            reasons = "; ".join(doc["keys"]["reasons"])
            return Outcome(False, 1, f"key rotation is overdue ({reasons}): run `vault key rotate`")
        return self._outcome(self.vault("key", "rotate"))

    def _maintenance(self) -> Outcome:
        forgot = self._outcome(self.vault("forget", "--prune", *self._policy_args()))
        if not forgot.ok or not self.schedule.extend_object_lock:
            return forgot
        return self._outcome(self.vault("object-lock", "extend"))


def _summary(doc: Any) -> str:
    """A line for the log from a job's JSON: ids, counts, outcome — never a path."""
    if not isinstance(doc, dict):
        return ""
    if "snapshot_id" in doc and "stats" in doc:
        stats = doc["stats"]
        return (
            f"snapshot {str(doc['snapshot_id'])[:8]}: {stats['files']} files, "
            f"{stats['bytes_added']} bytes new"
        )
    if "packs_read" in doc:
        return f"{doc['outcome']}: {doc['packs']} packs, {doc['packs_read']} read back"
    if "drill_id" in doc:
        return f"drill {str(doc['drill_id'])[:8]}: {doc.get('result', '?')}"
    return str(doc.get("outcome", ""))


def _has_database_tables(policy_dir: Path | None) -> bool:
    """Whether backup.toml has [[database]] tables (the scheduler checked them at start; the
    backup child reads them again, so an edit since is that child's one-line error)."""
    import tomllib

    path = (policy_dir or Path()) / "backup.toml"
    try:
        return bool(tomllib.loads(path.read_text(encoding="utf-8")).get("database"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
