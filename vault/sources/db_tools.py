"""Running a database server's own tools as child processes: finding them, the connection
arguments, the secret, a scrubbed environment, stderr read to its end, and the whole session
stopped. Never a shell, never a secret in an argument.

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
from collections.abc import Iterable
from dataclasses import dataclass

from vault.errors import VaultError
from vault.policy.databases import DatabaseSource
from vault.units import whole_number

# What a dump or load tool gets of vault's environment: enough to run, never vault's secrets
# or the storage credentials.
KEPT_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR")
STDERR_KEPT = 64 << 10  # the tail of a tool's stderr kept for its error line
# A password is a line; anything longer is a wrong file (and would not fit the pipe it is
# handed over on before the tool starts reading).
MAX_PASSWORD = 1024


class DatabaseError(VaultError):
    """A dump or load that failed; the message is one line naming the source and the cause."""


def find_tool(names: Iterable[str], purpose: str) -> str:
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
        return find_tool(["pg_dump"], "a PostgreSQL dump")
    order = ["mysqldump", "mariadb-dump"] if kind == "mysql" else ["mariadb-dump", "mysqldump"]
    return find_tool(order, f"a {kind} dump")


def client_tool(kind: str) -> str:
    if kind == "postgresql":
        return find_tool(["psql"], "PostgreSQL")
    return find_tool(["mysql", "mariadb"] if kind == "mysql" else ["mariadb", "mysql"], kind)


def read_password(source: DatabaseSource) -> str | None:
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


def mariadb_connection(source: DatabaseSource) -> tuple[list[str], str]:
    """The leading option-file argument (it must come first) and the connection arguments,
    and the option text to pass on a pipe."""
    first: list[str] = []
    text = ""
    password = read_password(source)
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


def pg_connection(source: DatabaseSource) -> tuple[list[str], dict[str, str]]:
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
            port = port or whole_number(suffix, 5) or 0
        args += ["--host", where]
        if port:
            args += ["--port", str(port)]
    elif source.host:
        args += ["--host", source.host, "--port", str(source.effective_port)]
    if source.user:
        args += ["--username", source.user]
    password = read_password(source)
    if password is not None:
        env["PGPASSWORD"] = password
    return args, env


def spawn(
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


def last_line(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    if not lines:
        return ""
    # Tools often end with a summary of an error given earlier; the first error says why.
    errors = [ln for ln in lines if "error" in ln.lower()]
    line = (errors or lines)[0]
    return line[:300]


class StderrTail:
    """Reads a child's stderr to its end in a thread (a full pipe would stall the tool), keeping
    the last bytes."""

    def __init__(self, pipe: object) -> None:

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


def exit_reason(code: int) -> str:
    return f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL to the tool's whole session (it started one): a script's own children (sqlcmd,
    smbclient) go with it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def reap(process: subprocess.Popen[bytes]) -> int:
    """Wait for the tool, then sweep what it left running in its session (it would hold the
    stderr pipe open, and be a dump writing on after vault judged it), then reap it. Waiting
    without reaping first keeps its process id from being reused by another process."""
    with contextlib.suppress(ChildProcessError):
        os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
    kill_group(process)
    return process.wait()
