"""Database dumps, read as a stream, and loads, written as one: the server's own tools
(mariadb-dump / mysqldump, pg_dump, the mariadb and psql clients, pg_restore) run as child
processes, never a shell, and never with a secret in their arguments.

A password reaches MariaDB's tools as an option file on an inherited pipe
(`--defaults-file=/dev/fd/N`: it never touches the disk and is not in /proc/PID/cmdline),
and PostgreSQL's in PGPASSWORD in the child's environment alone (libpq accepts a password file
only as a regular file; /proc/PID/environ is readable by the process's owner and root only).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from vault.errors import VaultError
from vault.policy.databases import DatabaseSource

# What a dump or load tool gets of vault's environment: enough to run, never vault's secrets
# or the storage credentials.
KEPT_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR")
STDERR_KEPT = 64 << 10  # the tail of a tool's stderr kept for its error line
MARIADB_TRAILER = b"-- Dump completed"
PGDUMP_MAGIC = b"PGDMP"
# A password is a line; anything longer is a wrong file (and would not fit the pipe it is
# handed over on before the tool starts reading).
MAX_PASSWORD = 1024


class DatabaseError(VaultError):
    """A dump or load that failed; the message is one line naming the source and the cause."""


def _tool(names: Iterable[str], purpose: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    names = list(names)
    raise DatabaseError(
        f"{purpose} needs {' or '.join(names)}, which is not installed here (install the "
        "database's client package)"
    )


def dump_tool(kind: str) -> str:
    if kind == "postgresql":
        return _tool(["pg_dump"], "a PostgreSQL dump")
    order = ["mysqldump", "mariadb-dump"] if kind == "mysql" else ["mariadb-dump", "mysqldump"]
    return _tool(order, f"a {kind} dump")


def client_tool(kind: str) -> str:
    if kind == "postgresql":
        return _tool(["psql"], "PostgreSQL")
    return _tool(["mysql", "mariadb"] if kind == "mysql" else ["mariadb", "mysql"], kind)


def _read_password(source: DatabaseSource) -> str | None:
    if not source.password_file:
        return None
    try:
        with open(source.password_file, encoding="utf-8", errors="strict") as handle:
            mode = os.fstat(handle.fileno()).st_mode & 0o777
            if mode & 0o077:
                # As for vault's own passphrase file: a secret others can read is no secret.
                raise DatabaseError(
                    f"database {source.name}: the password file {source.password_file} is "
                    f"accessible to group or others (mode {mode:04o}); run `chmod 600 "
                    f"{source.password_file}`"
                )
            password = handle.readline(MAX_PASSWORD + 1).rstrip("\r\n")
    except UnicodeDecodeError:
        raise DatabaseError(
            f"database {source.name}: the password file {source.password_file} is not UTF-8 text"
        ) from None
    except OSError as exc:
        raise DatabaseError(
            f"database {source.name}: cannot read its password file {source.password_file}: "
            f"{exc.strerror or exc}"
        ) from None
    if not password:
        raise DatabaseError(
            f"database {source.name}: the password file {source.password_file} is empty"
        )
    if len(password) > MAX_PASSWORD:
        raise DatabaseError(
            f"database {source.name}: the first line of {source.password_file} is longer than "
            f"{MAX_PASSWORD} characters: not a password"
        )
    return password


def base_environment(extra: Iterable[str] = ()) -> dict[str, str]:
    kept = set(KEPT_ENV) | set(extra)
    return {k: v for k, v in os.environ.items() if k in kept or k.startswith("LC_")}


@dataclass
class Invocation:
    """How to run one tool: its arguments, environment, and the option text (a secret) to
    hand it on a pipe, if any."""

    argv: list[str]
    env: dict[str, str]
    options_text: str = ""  # MariaDB: written to a pipe the tool reads as an option file


def _mariadb_connection(source: DatabaseSource) -> tuple[list[str], str]:
    """The leading option-file argument (it must come first) and the connection arguments,
    and the option text to pass on a pipe."""
    first: list[str] = []
    text = ""
    password = _read_password(source)
    if source.option_file:
        first = [f"--defaults-extra-file={source.option_file}"]
    elif password is not None:
        escaped = password.replace("\\", "\\\\").replace('"', '\\"')
        text = f'[client]\npassword="{escaped}"\n'
        # The only option file read: ~/.my.cnf, read after any extra file, would otherwise
        # override this password (and a [mysqldump] group there the dump's own options).
        first = ["--defaults-file=/dev/fd/{fd}"]  # the fd is filled in at start
    args: list[str] = []
    if source.socket:
        args += ["--protocol=SOCKET", f"--socket={source.socket}"]
    elif source.host:
        # "localhost" would mean the socket to MariaDB's tools; a host is a host.
        args += ["--protocol=TCP", f"--host={source.host}", f"--port={source.effective_port}"]
    if source.user:
        args.append(f"--user={source.user}")
    return first + args, text


def _pg_connection(source: DatabaseSource) -> tuple[list[str], dict[str, str]]:
    args = ["--no-password"]
    env: dict[str, str] = {"PGAPPNAME": "vault", "PGCONNECT_TIMEOUT": "30"}
    if source.socket:
        # libpq names the directory that holds the socket file.
        where, port = source.socket, source.port
        name = os.path.basename(where)
        if name.startswith(".s.PGSQL."):
            where = os.path.dirname(where)
            # The socket's name carries the server's port; libpq looks for .s.PGSQL.PORT.
            suffix = name.removeprefix(".s.PGSQL.")
            port = port or (int(suffix) if suffix.isdigit() else 0)
        args += ["--host", where]
        if port:
            args += ["--port", str(port)]
    elif source.host:
        args += ["--host", source.host, "--port", str(source.effective_port)]
    if source.user:
        args += ["--username", source.user]
    password = _read_password(source)
    if password is not None:
        env["PGPASSWORD"] = password
    return args, env


def dump_invocation(source: DatabaseSource, database: str) -> Invocation:
    env = base_environment(source.env)
    if source.kind == "command":
        return Invocation(list(source.command), env)
    if source.kind == "postgresql":
        args, extra = _pg_connection(source)
        # -Fc: pg_restore's own format, compressed by vault rather than by pg_dump (a dump
        # compressed by pg_dump changes everywhere when one row changes, and would not
        # deduplicate from night to night).
        return Invocation(
            [
                dump_tool("postgresql"),
                "--format=custom",
                "--compress=0",
                *args,
                "--dbname",
                database,
            ],
            {**env, **extra},
        )
    args, text = _mariadb_connection(source)
    return Invocation(
        [
            dump_tool(source.kind),
            *args,
            "--single-transaction",
            "--routines",
            "--triggers",
            "--hex-blob",
            # Its completion line tells a whole dump from a cut one: on, whatever an option
            # file says.
            "--comments",
            # MySQL 8 asks for the PROCESS privilege to dump tablespaces; a practice's
            # database has none of its own.
            "--no-tablespaces",
            "--default-character-set=utf8mb4",
            database,
        ],
        env,
        text,
    )


def _spawn(
    inv: Invocation, *, stdin: int | None = None, stdout: int | None = None
) -> subprocess.Popen[bytes]:
    argv = list(inv.argv)
    pass_fds: tuple[int, ...] = ()
    read_end = None
    if inv.options_text:
        read_end, write_end = os.pipe()
        data = inv.options_text.encode()
        # The option file is a few dozen bytes: it fits the pipe's buffer, so the write never
        # waits for the child.
        os.write(write_end, data)
        os.close(write_end)
        argv = [
            a.replace("{fd}", str(read_end)) if a.startswith("--defaults-file=/dev/fd/") else a
            for a in argv
        ]
        pass_fds = (read_end,)
    try:
        return subprocess.Popen(
            argv,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=stdout if stdout is not None else subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=inv.env,
            pass_fds=pass_fds,
            start_new_session=True,  # a Ctrl-C to vault is vault's to handle, not the tool's
        )
    except OSError as exc:
        raise DatabaseError(
            f"cannot run {os.path.basename(argv[0])}: {exc.strerror or exc}"
        ) from None
    finally:
        if read_end is not None:
            os.close(read_end)


def _last_line(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    if not lines:
        return ""
    # Tools often end with a summary of an error given earlier; the first error says why.
    errors = [ln for ln in lines if "error" in ln.lower()]
    line = (errors or lines)[0]
    return line[:300]


class _StderrTail:
    """Reads a child's stderr to its end in a thread (a full pipe would stall the tool), keeping
    the last bytes."""

    def __init__(self, pipe: object) -> None:
        import threading

        self.data = b""
        self._pipe = pipe
        self._thread = threading.Thread(target=self._drain, name="db-stderr", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        read = self._pipe.read  # type: ignore[attr-defined]
        while True:
            block = read(8192)
            if not block:
                return
            self.data = (self.data + block)[-STDERR_KEPT:]

    def join(self) -> bytes:
        self._thread.join()
        return self.data


def _exit_reason(code: int) -> str:
    return f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL to the tool's whole session (it started one): a script's own children (sqlcmd,
    smbclient) go with it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _reap(process: subprocess.Popen[bytes]) -> int:
    """Wait for the tool, then sweep what it left running in its session (it would hold the
    stderr pipe open, and be a dump writing on after vault judged it), then reap it. Waiting
    without reaping first keeps its process id from being reused by another process."""
    with contextlib.suppress(ChildProcessError):
        os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
    _kill_group(process)
    return process.wait()


class Dump:
    """One running dump: `read(n)` gives its output in blocks; `finish()` then says whether it
    is a whole dump (the tool succeeded in time, the output is not empty and, for MariaDB and
    PostgreSQL, looks complete) or raises DatabaseError."""

    def __init__(self, source: DatabaseSource, database: str) -> None:
        self.source, self.database = source, database
        inv = dump_invocation(source, database)
        self.tool = os.path.basename(inv.argv[0])
        self.process = _spawn(inv)
        assert self.process.stdout is not None and self.process.stderr is not None
        self._stdout = self.process.stdout
        self._stderr = _StderrTail(self.process.stderr)
        self.bytes = 0
        self._head = b""
        self._tail = b""
        # A timer, not a check between reads: a tool that hangs before writing anything (a
        # lock wait, a server-side backup that writes its file first) never returns a read.
        self.timed_out = threading.Event()
        self._watchdog: threading.Timer | None = None
        if source.timeout_seconds:
            self._watchdog = threading.Timer(source.timeout_seconds, self._expire)
            self._watchdog.daemon = True
            self._watchdog.start()

    def _expire(self) -> None:
        self.timed_out.set()
        _kill_group(self.process)

    @property
    def label(self) -> str:
        if self.source.kind == "command":
            return f"database {self.source.name} ({self.tool})"
        return f"database {self.source.name}/{self.database} ({self.tool} on {self.source.where()})"

    def read(self, n: int) -> bytes:
        block = self._stdout.read(n) or b""
        if len(self._head) < 16:
            self._head += block[: 16 - len(self._head)]
        if block:
            self._tail = (self._tail + block)[-256:]
        self.bytes += len(block)
        return block

    def close(self) -> None:
        """Stop the tool and its session if they still run (vault itself stopped); never
        raises."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self.process.returncode is None:
            _kill_group(self.process)
            self.process.wait()
        self._stdout.close()

    def finish(self) -> None:
        self._stdout.close()
        code = _reap(self.process)
        if self._watchdog is not None:
            self._watchdog.cancel()
        stderr = self._stderr.join()
        if self.timed_out.is_set():
            raise DatabaseError(
                f"{self.label} did not finish within {self.source.timeout_seconds} s (stopped "
                f"after {self.bytes} bytes)"
            )
        if code != 0:
            why = _last_line(stderr)
            raise DatabaseError(
                f"{self.label} {_exit_reason(code)} after {self.bytes} bytes"
                + (f": {why}" if why else "")
            )
        if self.bytes == 0:
            raise DatabaseError(f"{self.label} wrote nothing: an empty dump is not a backup")
        kind = self.source.kind
        if kind in ("mariadb", "mysql") and MARIADB_TRAILER not in self._tail:
            raise DatabaseError(
                f"{self.label} ended without its completion line (cut short): the dump is not whole"
            )
        if kind == "postgresql" and not self._head.startswith(PGDUMP_MAGIC):
            raise DatabaseError(f"{self.label} is not in pg_dump's custom format")


# -- loads and queries ----------------------------------------------------------------------


def run_sql(
    source: DatabaseSource, database: str, sql: str, timeout: float = 600
) -> list[list[str]]:
    """Rows (tab-separated fields) of one SQL statement run with the server's own client."""
    if source.kind == "postgresql":
        args, extra = _pg_connection(source)
        inv = Invocation(
            [client_tool("postgresql"), "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
             *args, "--dbname", database, "-c", sql],
            {**base_environment(), **extra},
        )  # fmt: skip
    else:
        args, text = _mariadb_connection(source)
        inv = Invocation(
            [client_tool(source.kind), *args, "--batch", "--skip-column-names", "--raw",
             "--default-character-set=utf8mb4",
             *([database] if database else []), "-e", sql],
            base_environment(),
            text,
        )  # fmt: skip
    process = _spawn(inv)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise DatabaseError(
            f"a query on {source.where()} did not finish within {timeout:.0f} s"
        ) from None
    if process.returncode != 0:
        why = _last_line(err) or _exit_reason(process.returncode)
        raise DatabaseError(f"{source.where()}: {why}")
    return [line.split("\t") for line in out.decode("utf-8", "replace").splitlines() if line]


def quote_name(kind: str, name: str) -> str:
    if kind == "postgresql":
        return '"' + name.replace('"', '""') + '"'
    return "`" + name.replace("`", "``") + "`"


def create_database(source: DatabaseSource, database: str) -> None:
    """Create `database`; refuses one that exists (a load never overwrites a live database)."""
    q = quote_name(source.kind, database)
    if source.kind == "postgresql":
        found = run_sql(
            source, "postgres", f"SELECT 1 FROM pg_database WHERE datname = '{_literal(database)}'"
        )
    else:
        found = run_sql(
            source,
            "",
            f"SELECT 1 FROM information_schema.schemata WHERE schema_name = '{_literal(database)}'",
        )
    if found:
        raise DatabaseError(
            f"database {database} already exists on {source.where()}: vault loads into a new "
            "database only (name another, or drop it first)"
        )
    run_sql(source, "postgres" if source.kind == "postgresql" else "", f"CREATE DATABASE {q}")


def drop_database(source: DatabaseSource, database: str) -> None:
    q = quote_name(source.kind, database)
    run_sql(
        source,
        "postgres" if source.kind == "postgresql" else "",
        f"DROP DATABASE IF EXISTS {q}",
    )


def _literal(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "''")


def load_invocation(source: DatabaseSource, database: str) -> Invocation:
    if source.kind == "postgresql":
        args, extra = _pg_connection(source)
        tool = _tool(["pg_restore"], "a PostgreSQL load")
        return Invocation(
            [tool, "--exit-on-error", "--no-owner", "--no-privileges", *args, "--dbname", database],
            {**base_environment(), **extra},
        )
    args, text = _mariadb_connection(source)
    return Invocation(
        [
            client_tool(source.kind),
            *args,
            "--batch",
            "--binary-mode",
            "--default-character-set=utf8mb4",
            database,
        ],
        base_environment(),
        text,
    )


def load(
    source: DatabaseSource,
    database: str,
    blocks: Iterator[bytes],
    kind: str,
    timeout: float | None = None,
) -> int:
    """Stream a dump (of `kind`, the kind it was taken from) into `database` on the server
    `source` names, created first; the bytes loaded. Nothing is written to disk on the way."""
    if (kind == "postgresql") != (source.kind == "postgresql"):
        raise DatabaseError(f"a {kind} dump cannot be loaded into a {source.kind} server")
    create_database(source, database)
    invocation = load_invocation(source, database)
    process = _spawn(invocation, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert process.stdin is not None and process.stderr is not None
    stderr = _StderrTail(process.stderr)
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        process.kill()

    watchdog = threading.Timer(timeout, expire) if timeout else None
    if watchdog is not None:
        watchdog.daemon = True
        watchdog.start()
    total = 0
    partial = (
        f"; database {database} on {source.where()} may hold part of the dump: drop it before "
        "loading again"
    )
    try:
        for block in blocks:
            try:
                process.stdin.write(block)
            except BrokenPipeError:
                break  # the loader stopped: its exit code and stderr say why
            total += len(block)
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
    except VaultError as exc:  # the dump could not be read whole (damage, storage)
        process.kill()
        process.wait()
        raise type(exc)(f"{exc}{partial}") from None
    except BaseException:
        process.kill()
        process.wait()
        raise
    finally:
        # Past the last block the loader may still be working: the watchdog stays until
        # it exits, and only an error above ends it here.
        if watchdog is not None and process.poll() is not None:
            watchdog.cancel()
    code = process.wait()
    if watchdog is not None:
        watchdog.cancel()
    err = stderr.join()
    if timed_out.is_set():
        raise DatabaseError(
            f"loading into {database} on {source.where()} did not finish within {timeout:.0f} s"
            + partial
        )
    if code != 0:
        why = _last_line(err)
        raise DatabaseError(
            f"loading into {database} on {source.where()}: {os.path.basename(invocation.argv[0])} "
            f"{_exit_reason(code)}" + (f": {why}" if why else "") + partial
        )
    return total
