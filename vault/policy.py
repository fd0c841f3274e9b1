"""Policy files (TOML in a policy directory): parsed into frozen values, errors that name the
file, the line and the key. Pure: no storage, no clock.

Only keys.toml exists so far; retention, schedule and drill policies join it in later issues.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vault.errors import UsageError
from vault.retention import RetentionPolicy

POLICY_DIR_ENV = "VAULT_POLICY_DIR"


@dataclass(frozen=True)
class KeyPolicy:
    max_epoch_age_days: int = 365
    max_objects_per_epoch: int = 1_000_000
    warn_days: int = 30


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


def _load(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read policy file {path}: {exc.strerror}") from None
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
    doc, text = _load(path)
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


def load_key_policy(directory: Path | None) -> KeyPolicy:
    def check(key: str, value: Any) -> str | None:
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
