"""console.toml: what `vault serve` listens on, which repositories it serves and how each is
opened. Pure: parsed into frozen values, errors naming the file, the line and the key.

A repository is opened with a key file, a password file or a password command named here;
a passphrase written into the file itself is refused (the file is configuration, often read
by more people than the key)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vault.errors import UsageError
from vault.policy.files import _line_of, load_toml
from vault.units import whole_number

DEFAULT_LISTEN = "127.0.0.1:8443"
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")  # it appears in URLs: nothing else
SECRET_KEYS = ("key_file", "password_file", "password_command")
_FORBIDDEN = ("password", "passphrase", "secret", "key")


@dataclass(frozen=True)
class ConsoleRepository:
    name: str
    url: str
    key_file: str = ""
    password_file: str = ""
    password_command: str = ""
    policy_dir: str = ""  # its drill.toml, keys.toml, pacs.toml (PACS destinations)


@dataclass(frozen=True)
class ConsolePolicy:
    listen: str = DEFAULT_LISTEN
    certificate: str = ""  # PEM; empty: a self-signed one in state_dir, made at first start
    private_key: str = ""
    state_dir: str = ""  # users, sign-in log, the generated certificate (default below)
    idle_minutes: float = 15.0  # automatic logoff (HIPAA 164.312(a)(2)(iii))
    max_failures: int = 5  # failed sign-ins before the account is locked
    lockout_minutes: float = 15.0
    # Failed sign-ins from one client address, over any accounts, before it is refused for
    # the rest of the window (password spraying).
    address_failures: int = 20
    address_window_minutes: float = 5.0
    # Directory restores go into a new folder under this one, and nowhere else: a browser
    # user never types a path on the server.
    restore_root: str = ""
    repositories: tuple[ConsoleRepository, ...] = field(default_factory=tuple)

    def host_port(self) -> tuple[str, int]:
        return split_listen(self.listen)

    def state_path(self) -> Path:
        if self.state_dir:
            return Path(self.state_dir)
        return default_state_dir()

    def repository(self, name: str) -> ConsoleRepository | None:
        return next((r for r in self.repositories if r.name == name), None)


def default_state_dir() -> Path:
    explicit = os.environ.get("VAULT_STATE_DIR")
    if explicit:
        return Path(explicit) / "console"
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(base) / "vault" / "console"


def split_listen(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    port = whole_number(port_text, 5)
    if not sep or not host or port is None or not 0 < port < 65536:
        raise UsageError(f"--listen {text!r} is not HOST:PORT (e.g. {DEFAULT_LISTEN})")
    return host.strip("[]"), port


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _console_table(path: Path, text: str, table: Any) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [console] must be a table")
    defaults = ConsolePolicy()
    values: dict[str, Any] = {}
    for key, value in table.items():
        where = f"{path}, line {_line_of(text, key)}"
        if key == "repositories" or not hasattr(defaults, key):
            raise UsageError(f"{where}: unknown key {key!r} in [console]")
        expected = type(getattr(defaults, key))
        if expected is float:
            if not _number(value):
                raise UsageError(f"{where}: {key} must be a number above 0")
            value = float(value)
        elif expected is int:
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise UsageError(f"{where}: {key} must be a whole number, 1 or more")
        elif not isinstance(value, str):
            raise UsageError(f"{where}: {key} must be a string")
        values[key] = value
    if "listen" in values:
        split_listen(values["listen"])
    return values


def _repository(path: Path, text: str, number: int, table: Any) -> ConsoleRepository:
    where = f"{path}, [[repository]] number {number}"
    if not isinstance(table, dict):
        raise UsageError(f"{where} must be a table")
    for key, value in table.items():
        if key in _FORBIDDEN:
            raise UsageError(
                f"{where}: {key!r} would put a secret into the console's configuration; name "
                "a key_file, password_file or password_command instead"
            )
        if key not in ConsoleRepository.__dataclass_fields__:
            raise UsageError(f"{path}, line {_line_of(text, key)}: unknown key {key!r}")
        if not isinstance(value, str):
            raise UsageError(f"{path}, line {_line_of(text, key)}: {key} must be a string")
    name = table.get("name", "")
    if not NAME.fullmatch(name):
        raise UsageError(
            f"{where}: name {name!r} must be 1-40 lower-case letters, digits or dashes (it is "
            "part of the console's URLs)"
        )
    if not table.get("url"):
        raise UsageError(f"{where} ({name}): url is missing")
    given = [k for k in SECRET_KEYS if table.get(k)]
    if len(given) != 1:
        raise UsageError(
            f"{where} ({name}): name exactly one of key_file, password_file or password_command"
        )
    return ConsoleRepository(**table)


def load_console_policy(path: Path) -> ConsolePolicy:
    doc, text = load_toml(path)
    for key in doc:
        if key not in ("console", "repository"):
            raise UsageError(f"{path}: unknown table {key!r} (known: [console], [[repository]])")
    values = _console_table(path, text, doc.get("console", {}))
    raw = doc.get("repository", [])
    if not isinstance(raw, list):
        raise UsageError(f"{path}: repository must be [[repository]] tables")
    repositories = tuple(_repository(path, text, n, t) for n, t in enumerate(raw, start=1))
    names = [r.name for r in repositories]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"{path}: repository name {twice[0]!r} is used twice")
    # No repository is fine for `vault console user …`, which needs only the state directory;
    # `vault serve` refuses it.
    return ConsolePolicy(**values, repositories=repositories)
