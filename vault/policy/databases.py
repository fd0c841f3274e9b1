"""Database sources: a practice-management or imaging database whose dump a backup streams into
its snapshot, written as a URL on the command line or as a `[[database]]` table in backup.toml.

Pure: it parses and checks, it runs nothing (vault.sources.databases runs the dump tools). A
secret never appears here: a URL or table names a password file or the server's own option
file, and a password written into a URL is refused, because a URL is a command-line argument
(visible in `ps`) and ends up in logs and shell history.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from vault.errors import UsageError
from vault.policy.files import load_toml

KINDS = ("mariadb", "mysql", "postgresql", "command")
DEFAULT_PORTS = {"mariadb": 3306, "mysql": 3306, "postgresql": 5432}
# What a dump of each kind is called inside the snapshot.
SUFFIXES = {"mariadb": ".sql", "mysql": ".sql", "postgresql": ".pgdump", "command": ""}
DUMP_ROOT = "/databases"

# A database or source name: it becomes a file name inside the snapshot.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.$-]{0,63}$")
_UNIX_HOST = re.compile(
    r"^(?P<scheme>[a-z]+)://(?P<user>[^@/]*@)?unix\((?P<socket>/[^)]+)\)(?P<rest>[/?].*)?$"
)
_QUERY_KEYS = ("password_file", "option_file", "socket", "name", "path")


@dataclass(frozen=True)
class DatabaseSource:
    kind: str
    name: str  # names the source in reports and in the snapshot's dump paths
    databases: tuple[str, ...] = ()
    host: str = ""
    port: int = 0  # 0: the kind's default
    socket: str = ""
    user: str = ""
    password_file: str = ""
    option_file: str = ""  # MariaDB/MySQL: the server's own client option file
    # Where the dumps go inside the snapshot: a folder ({path}/{database}{suffix}), or for
    # kind "command" the dump file itself.
    path: str = ""
    command: tuple[str, ...] = ()  # kind "command": run without a shell, its stdout is the dump
    timeout_seconds: int = 0  # 0: no limit
    env: tuple[str, ...] = field(default=())  # kind "command": variables it gets besides PATH

    def dump_paths(self) -> list[tuple[str, str]]:
        """(database, path inside the snapshot) for each dump this source makes."""
        if self.kind == "command":
            return [(self.name, self.path or f"{DUMP_ROOT}/{self.name}.dump")]
        folder = (self.path or f"{DUMP_ROOT}/{self.name}").rstrip("/")
        return [(db, f"{folder}/{db}{SUFFIXES[self.kind]}") for db in self.databases]

    @property
    def effective_port(self) -> int:
        return self.port or DEFAULT_PORTS.get(self.kind, 0)

    def where(self) -> str:
        """The server, for messages: host:port or the socket (never a credential)."""
        if self.kind == "command":
            return "command " + (os.path.basename(self.command[0]) if self.command else "?")
        if self.socket:
            return f"socket {self.socket}"
        if self.option_file and not self.host:
            return f"the server in {self.option_file}"
        return f"{self.host or '127.0.0.1'}:{self.effective_port}"


def parse_url(text: str, *, what: str = "--database", server: bool = False) -> DatabaseSource:
    """`mariadb://USER@HOST:PORT/DB[,DB...]?password_file=F` (also mysql://, postgresql://);
    a Unix socket as `USER@unix(/path/to/socket)/DB` or `USER@/DB?socket=/path`; or
    `?option_file=F`."""
    # Before any parsing, whose errors would quote the text: a password may hold '/', '#',
    # '?' or '@', so everything before the last '@' ahead of the query is the user part.
    authority = text.split("://", 1)[-1].split("?", 1)[0].split("#", 1)[0]
    if "@" in authority and ":" in authority.rsplit("@", 1)[0]:
        raise UsageError(
            f"{what}: a password in a URL would be on the command line and in logs; write it "
            "into a file readable only by you and name it with ?password_file=FILE"
        )
    # A socket written as the host, unix(/path/to/socket), as Go's MySQL driver spells it.
    unix = _UNIX_HOST.match(text)
    socket_path = ""
    if unix:
        socket_path = unix.group("socket")
        text = f"{unix.group('scheme')}://{unix.group('user') or ''}{unix.group('rest') or '/'}"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        # Not the parser's words: they quote the URL, and a mistyped one may hold a secret.
        raise UsageError(f"{what}: not a database URL (check the user, host and port)") from None
    scheme = {"postgres": "postgresql", "mysql": "mysql"}.get(parts.scheme, parts.scheme)
    if scheme not in ("mariadb", "mysql", "postgresql"):
        raise UsageError(
            f"{what}: the URL must start with mariadb://, mysql:// or postgresql:// "
            f"(got {parts.scheme + '://' if parts.scheme else 'no scheme'})"
        )
    if parts.password is not None:
        raise UsageError(
            f"{what}: a password in a URL would be on the command line and in logs; write it "
            "into a file readable only by you and name it with ?password_file=FILE"
        )
    query: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in _QUERY_KEYS:
            raise UsageError(f"{what}: unknown setting {key!r} (known: {', '.join(_QUERY_KEYS)})")
        query[key] = value
    if socket_path and "socket" in query:
        raise UsageError(f"{what}: give the socket once: unix(PATH) or ?socket=PATH")
    databases = tuple(unquote(d) for d in parts.path.lstrip("/").split(",") if d)
    values: dict[str, Any] = {
        "kind": scheme,
        "name": query.get("name") or (databases[0] if len(databases) == 1 else scheme),
        "databases": databases,
        "host": parts.hostname or "",
        "port": port or 0,
        "socket": socket_path or query.get("socket", ""),
        "user": unquote(parts.username or ""),
        "password_file": query.get("password_file", ""),
        "option_file": query.get("option_file", ""),
        "path": query.get("path", ""),
    }
    return checked(values, what, server=server)


def checked(values: dict[str, Any], what: str, *, server: bool = False) -> DatabaseSource:
    """A DatabaseSource from its settings, or a UsageError starting with `what`."""
    kind = values.get("kind", "")
    if kind not in KINDS:
        raise UsageError(f"{what}: kind must be one of {', '.join(KINDS)}")
    for db in values.get("databases", ()):
        if not _NAME.match(db):
            raise UsageError(f"{what}: database name {db!r} is not one vault can name a dump by")
    name = values.get("name", "")
    if not isinstance(name, str) or not _NAME.match(name):
        raise UsageError(
            f"{what}: name must be 1-64 letters, digits, '_', '-', '.' or '$' (it names the dump)"
        )
    if kind == "command":
        if not values.get("command"):
            raise UsageError(f'{what}: kind "command" needs command = ["program", "arg", ...]')
        for key in ("host", "socket", "user", "password_file", "option_file", "databases"):
            if values.get(key):
                raise UsageError(f'{what}: {key} does not go with kind "command"')
    else:
        if not values.get("databases") and not server:
            raise UsageError(f"{what}: name the database(s) to dump")
        if values.get("command"):
            raise UsageError(f'{what}: command goes with kind "command" only')
        if values.get("host") and values.get("socket"):
            raise UsageError(f"{what}: give a host or a socket, not both")
        if values.get("option_file") and kind == "postgresql":
            raise UsageError(f"{what}: option_file is for MariaDB and MySQL (use password_file)")
        if values.get("password_file") and values.get("option_file"):
            raise UsageError(
                f"{what}: give password_file or option_file, not both (the option file holds "
                "the password)"
            )
        if not values.get("host") and not values.get("socket") and not values.get("option_file"):
            values = {**values, "host": "127.0.0.1"}
    if values.get("env") and kind != "command":
        raise UsageError(
            f'{what}: env goes with kind "command" (a dump tool gets no extra variables)'
        )
    timeout = values.get("timeout_seconds", 0)
    if isinstance(timeout, int) and timeout < 0:
        raise UsageError(f"{what}: timeout_seconds must be 0 (no limit) or more")
    path = values.get("path", "")
    if path and (not path.startswith("/") or ".." in path.split("/") or path.rstrip("/") == ""):
        raise UsageError(
            f"{what}: path must be an absolute path inside the snapshot, like /databases"
        )
    port = values.get("port", 0)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise UsageError(f"{what}: port must be a number from 1 to 65535")
    frozen: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return DatabaseSource(**frozen)


_TABLE_TYPES: dict[str, type | tuple[type, ...]] = {
    "kind": str,
    "name": str,
    "databases": list,
    "host": str,
    "port": int,
    "socket": str,
    "user": str,
    "password_file": str,
    "option_file": str,
    "path": str,
    "command": list,
    "timeout_seconds": int,
    "env": list,
}


def load_database_sources(
    directory: Path | None, filename: str = "backup.toml"
) -> list[DatabaseSource]:
    """The `[[database]]` tables of backup.toml (none when the file or the tables are absent);
    a mistake names the file, the table's place and the key."""
    if directory is None or not (directory / filename).exists():
        return []
    path = directory / filename
    doc, _ = load_toml(path)
    tables = doc.get("database", [])
    if not isinstance(tables, list):
        raise UsageError(f"{path}: database must be written as [[database]] tables")
    sources: list[DatabaseSource] = []
    for number, table in enumerate(tables, start=1):
        what = f"{path}, [[database]] number {number}"
        if not isinstance(table, dict):
            raise UsageError(f"{what}: must be a table")
        for key, value in table.items():
            expected = _TABLE_TYPES.get(key)
            if expected is None:
                raise UsageError(f"{what}: unknown key {key!r}")
            wrong = not isinstance(value, expected) or isinstance(value, bool)
            if expected is list and not wrong:
                wrong = not all(isinstance(v, str) and v for v in value)
            if wrong:
                kind = "a list of strings" if expected is list else expected.__name__  # type: ignore[union-attr]
                raise UsageError(f"{what}: {key} must be {kind}")
        if "name" not in table:
            table = {**table, "name": (table.get("databases") or [table.get("kind", "")])[0]}
        sources.append(checked(dict(table), what))
    names = [s.name for s in sources]
    for name in set(names):
        if names.count(name) > 1:
            raise UsageError(f"{path}: two [[database]] tables are named {name!r}")
    return sources


# -- drills ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatabaseDrillPolicy:
    """drill.toml's [database]: what a drill proves of each database dump it loads."""

    check: bool = False  # every drill loads the snapshot's dumps (or `vault drill --database`)
    # A server to load into (URL without a database: a scratch database is made and dropped);
    # "" starts a throwaway server of the dump's kind from the installed server binaries.
    server: str = ""
    queries: tuple[str, ...] = ()  # each must return at least one row
    min_rows: tuple[tuple[str, int], ...] = ()  # table -> fewest rows it may hold
    check_tables: bool = True  # MariaDB/MySQL: CHECK TABLE on every table
    timeout_seconds: int = 3600  # per dump: load and checks

    def server_source(self) -> DatabaseSource | None:
        return (
            parse_url(self.server, what="drill.toml [database] server", server=True)
            if self.server
            else None
        )


def load_database_drill_policy(directory: Path | None) -> DatabaseDrillPolicy:
    if directory is None or not (directory / "drill.toml").exists():
        return DatabaseDrillPolicy()
    path = directory / "drill.toml"
    doc, _ = load_toml(path)
    table = doc.get("database", {})
    what = f"{path}, [database]"
    if not isinstance(table, dict):
        raise UsageError(f"{what}: must be a table")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key in ("check", "check_tables"):
            ok = isinstance(value, bool)
            values[key] = value
        elif key == "server":
            ok = isinstance(value, str)
            values[key] = value
        elif key == "queries":
            ok = isinstance(value, list) and all(isinstance(q, str) and q.strip() for q in value)
            values[key] = tuple(value) if ok else ()
        elif key == "min_rows":
            ok = isinstance(value, dict) and all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value.values()
            )
            values[key] = tuple(sorted(value.items())) if ok else ()
        elif key == "timeout_seconds":
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
            values[key] = value
        else:
            raise UsageError(f"{what}: unknown key {key!r}")
        if not ok:
            raise UsageError(f"{what}: {key} has the wrong type (see the comments in drill.toml)")
    policy = DatabaseDrillPolicy(**values)
    policy.server_source()  # a bad server URL fails here, at load time
    for table_name, _ in policy.min_rows:
        if not _NAME.match(table_name):
            raise UsageError(f"{what}: min_rows names {table_name!r}, not a table name")
    return policy
