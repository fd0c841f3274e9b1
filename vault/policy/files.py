"""Policy files (TOML in a policy directory): parsed into frozen values, errors that name the
file, the line and the key. Pure: no storage, no clock.

One file per concern: backup.toml, schedule.toml (with its [alerts] table), retention.toml,
drill.toml and keys.toml; policies/ ships each, commented.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vault.errors import UsageError
from vault.policy.retention import RetentionPolicy
from vault.units import whole_number

POLICY_DIR_ENV = "VAULT_POLICY_DIR"


@dataclass(frozen=True)
class KeyPolicy:
    max_epoch_age_days: int = 365
    # The master key's usage period (SP 800-57: a key-wrapping key's is up to two years).
    max_master_age_days: int = 365
    max_objects_per_epoch: int = 1_000_000
    warn_days: int = 30
    # Key commands (add, remove, passwd, rotate, retire) only for someone who opened the
    # repository with a two-factor slot (passphrase + key file), or the recovery key.
    require_two_factor_for_key_commands: bool = False
    # Backups refuse to seal under a data-key epoch older than max_epoch_age_days (its usage
    # period, NIST SP 800-57: at most two years) instead of only warning.
    refuse_overdue_epoch: bool = False


def policy_dir(explicit: str | None) -> Path | None:
    chosen = explicit or os.environ.get(POLICY_DIR_ENV)
    if not chosen:
        return None
    path = Path(chosen)
    if not path.is_dir():
        raise UsageError(f"policy directory {path} does not exist")
    return path


def _line_of(text: str, key: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip().startswith(key) and "=" in line:
            return number
    return 0


def load_toml(path: Path) -> tuple[dict[str, Any], str]:
    """A policy file's document and text; one line naming the file when it cannot be read or
    parsed."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read policy file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"policy file {path} is not UTF-8 text") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"policy file {path} is not valid TOML: {exc}") from None


@dataclass(frozen=True)
class DrillPolicy:
    sample_studies: int = 3
    single_study_rto_minutes: int = 15
    full_restore_rto_hours: int = 72
    rpo_hours: int = 24
    frequency_days: int = 31
    priority: str = "newest-first"  # order of a full drill: newest-first | oldest-first


def _load_policy(
    directory: Path | None,
    filename: str,
    table_name: str,
    defaults: Any,
    check: Callable[[str, Any], str | None],
) -> dict[str, Any]:
    """The validated values of [table_name] in directory/filename ({} when absent). `check`
    returns a complaint about one value, or None; errors name the file, line and key."""
    if directory is None or not (directory / filename).exists():
        return {}
    path = directory / filename
    doc, text = load_toml(path)
    table = doc.get(table_name, {})
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [{table_name}] must be a table")
    for key, value in table.items():
        where = f"{path}, line {_line_of(text, key)}"
        if not hasattr(defaults, key):
            raise UsageError(f"{where}: unknown key {key!r} in [{table_name}]")
        complaint = check(key, value)
        if complaint:
            raise UsageError(f"{where}: {key} {complaint}")
    return dict(table)


def _whole(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


@dataclass(frozen=True)
class RolesPolicy:
    """Who is responsible (roles.toml): named in the evidence pack and its sign-off block."""

    security_official: str = ""  # HIPAA 164.308(a)(2)
    privacy_officer: str = ""
    contingency_plan_owner: str = ""
    reviewer: str = ""  # reviews drills and signs the evidence pack


def load_roles_policy(directory: Path | None) -> RolesPolicy:
    def check(key: str, value: Any) -> str | None:
        return None if isinstance(value, str) else "must be a name in quotes"

    return RolesPolicy(**_load_policy(directory, "roles.toml", "roles", RolesPolicy(), check))


def load_key_policy(directory: Path | None) -> KeyPolicy:
    def check(key: str, value: Any) -> str | None:
        if key in ("require_two_factor_for_key_commands", "refuse_overdue_epoch"):
            return None if isinstance(value, bool) else "must be true or false"
        if key == "max_epoch_age_days" and _whole(value, 1) and value > 730:
            return "must be at most 730: a data key's usage period is two years at most"
        if key == "max_master_age_days" and _whole(value, 1) and value > 730:
            return "must be at most 730: the master key's usage period is two years at most"
        return None if _whole(value, 1) else "must be a whole number of at least 1"

    return KeyPolicy(**_load_policy(directory, "keys.toml", "keys", KeyPolicy(), check))


def load_drill_policy(directory: Path | None) -> DrillPolicy:
    def check(key: str, value: Any) -> str | None:
        if key == "priority":
            ok = value in ("newest-first", "oldest-first")
            return None if ok else "must be newest-first or oldest-first"
        return None if _whole(value, 0) else "must be a whole number"

    return DrillPolicy(**_load_policy(directory, "drill.toml", "drill", DrillPolicy(), check))


def load_retention_policy(file: Path | None, directory: Path | None) -> RetentionPolicy:
    """retention.toml: from an explicit file, else the policy directory, else an error (there
    is no safe default for forgetting backups)."""
    if file is not None:
        if not file.exists():
            raise UsageError(f"retention policy {file} does not exist")
        directory, filename = file.parent, file.name
    elif directory is not None and (directory / "retention.toml").exists():
        filename = "retention.toml"
    else:
        raise UsageError(
            "no retention policy: pass --policy FILE or --policy-dir DIR (see "
            "policies/retention.toml)"
        )

    def check(key: str, value: Any) -> str | None:
        if key == "hold_tags":
            ok = isinstance(value, list) and all(isinstance(t, str) for t in value)
            return None if ok else "must be a list of tag strings"
        return None if _whole(value, 0) else "must be a whole number of at least 0"

    values = _load_policy(directory, filename, "retention", RetentionPolicy(), check)
    if "hold_tags" in values:
        values["hold_tags"] = tuple(values["hold_tags"])
    policy = RetentionPolicy(**values)
    if policy.empty:
        raise UsageError(f"{directory / filename} keeps nothing: refusing to forget every snapshot")
    return policy


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True)
class BackupPolicy:
    """What the scheduler backs up, where to, and the hook that runs first."""

    repository: str = ""  # default: $VAULT_REPO
    password_file: str = ""  # a file holding the passphrase (default: $VAULT_PASSWORD_FILE)
    sources: tuple[str, ...] = ()
    # PACS endpoints (names in pacs.toml) backed up after the files, each with
    # `vault backup --from-pacs NAME`: the studies that live only in a PACS.
    pacs_sources: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    host: str = ""
    pre_hook: str = ""  # a command (no shell) run before each backup, e.g. a database dump
    pre_hook_timeout_seconds: int = 1800
    # Variables the hook gets besides PATH, HOME, the locale and a few more (vault.ops.jobrunner).
    pre_hook_env: tuple[str, ...] = ()


@dataclass(frozen=True)
class SchedulePolicy:
    backup_at: str = "01:30"  # every day, local time
    retry_after_minutes: int = 15  # a failed job is retried once after this (0: at once)
    check_day: str = "sunday"
    check_at: str = "04:00"
    check_read_percent: int = 25  # weekly: 4 runs read every pack within 28 days
    drill_at: str = "05:00"  # daily look: a sampled drill runs when drill.toml says one is due
    full_drill_every_days: int = 365  # 0: never (a full drill needs space for the archive)
    keys_at: str = "06:00"  # daily look at key rotation
    rotate_keys: bool = True  # start a new data-key epoch when the key policy says overdue
    maintenance_day: str = "saturday"  # forget + prune
    maintenance_at: str = "03:00"
    extend_object_lock: bool = False  # also `vault object-lock extend` (S3 Object Lock only)
    # Replicas (`vault init --replica-of`) that `vault copy` fills after each nightly backup,
    # opened with copy_key_file (a machine key file: no Argon2id to pay each night) or else
    # copy_password_file (default: backup.toml's password_file).
    copy_to: tuple[str, ...] = ()
    copy_password_file: str = ""
    copy_key_file: str = ""
    copy_rpo_hours: int = 48  # `status` warns when a replica is further behind than this
    log_file: str = ""  # rotating log file, besides stderr
    metrics_file: str = ""  # Prometheus textfile, refreshed after every job


@dataclass(frozen=True)
class AlertPolicy:
    command: str = ""  # run with the alert as JSON on stdin
    webhook_url: str = ""  # POST the alert as JSON
    email_to: tuple[str, ...] = ()
    email_from: str = ""
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_starttls: bool = True
    smtp_user: str = ""
    smtp_password_file: str = ""
    smtp_ca_file: str = ""  # a private CA's certificates (PEM); the system's trust store if ""

    @property
    def configured(self) -> bool:
        return bool(self.command or self.webhook_url or self.email_to)


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def _clock_time(value: Any) -> bool:
    if not isinstance(value, str) or len(value) != 5 or value[2] != ":":
        return False
    hours, minutes = whole_number(value[:2]), whole_number(value[3:])
    return hours is not None and minutes is not None and hours < 24 and minutes < 60


def _typed(defaults: Any, key: str, value: Any) -> str | None:
    """A complaint when `value` does not have the type of the default for `key`."""
    default = getattr(defaults, key)
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "must be true or false"
    if isinstance(default, int):
        return None if _whole(value, 1) else "must be a whole number of at least 1"
    if isinstance(default, tuple):
        return None if _strings(value) else "must be a list of non-empty strings"
    if key.endswith("_at"):
        return None if _clock_time(value) else 'must be a time of day like "01:30"'
    if key.endswith("_day"):
        return None if value in WEEKDAYS else 'must be a day of the week, e.g. "sunday"'
    return None if isinstance(value, str) else "must be a string"


def _frozen(values: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def load_backup_policy(directory: Path | None) -> BackupPolicy:
    defaults = BackupPolicy()
    values = _load_policy(
        directory, "backup.toml", "backup", defaults, lambda k, v: _typed(defaults, k, v)
    )
    return BackupPolicy(**_frozen(values))


def load_schedule_policy(directory: Path | None) -> tuple[SchedulePolicy, AlertPolicy]:
    schedule, alerts = SchedulePolicy(), AlertPolicy()

    def check_schedule(key: str, value: Any) -> str | None:
        if key in ("full_drill_every_days", "retry_after_minutes"):
            return None if _whole(value, 0) else "must be a whole number of at least 0"
        if key == "check_read_percent":
            ok = _whole(value, 1) and value <= 100
            return None if ok else "must be a whole number from 1 to 100"
        return _typed(schedule, key, value)

    values = _load_policy(directory, "schedule.toml", "schedule", schedule, check_schedule)

    def check_alerts(key: str, value: Any) -> str | None:
        if key == "webhook_url" and value and not str(value).startswith(("https://", "http://")):
            return "must be an http:// or https:// URL"
        return _typed(alerts, key, value)

    found = _load_policy(directory, "schedule.toml", "alerts", alerts, check_alerts)
    return SchedulePolicy(**values), AlertPolicy(**_frozen(found))
