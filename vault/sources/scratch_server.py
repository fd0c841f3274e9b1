"""A throwaway MariaDB or PostgreSQL server in a scratch directory: what a drill loads a
backed-up dump into, to prove it restores. Started from the installed server binaries on a Unix
socket only (no network), owned by this process, stopped by PID, and its directory removed with
the data it held.

PostgreSQL refuses to run as root; vault running as root runs the scratch server as the
`postgres` system user the Debian package creates (the scratch directory is made its own).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from vault.policy.databases import DatabaseSource
from vault.sources.db_loads import run_sql
from vault.sources.db_tools import DatabaseError
from vault.units import whole_number

START_TIMEOUT = 90.0


def _pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    # Debian keeps the server binaries out of PATH, one folder per major version.
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: whole_number(p.split("/")[4]) or 0,
    )
    return candidates[-1] if candidates else None


def _mariadb_binary(name: str) -> str | None:
    for candidate in (name, name.replace("mariadb", "mysql")):
        found = shutil.which(candidate) or (
            f"/usr/sbin/{candidate}" if os.access(f"/usr/sbin/{candidate}", os.X_OK) else None
        )
        if found:
            return found
    return None


def available(kind: str) -> str | None:
    """None when a scratch server of `kind` can be started here, else why not."""
    if kind == "postgresql":
        missing = [n for n in ("initdb", "postgres") if _pg_binary(n) is None]
        if missing:
            return "the PostgreSQL server binaries (initdb, postgres) are not installed"
        if os.geteuid() == 0 and not _has_user("postgres"):
            return "PostgreSQL does not run as root, and there is no postgres user to run it as"
        return None
    if kind in ("mariadb", "mysql"):
        if _mariadb_binary("mariadbd") is None or _mariadb_binary("mariadb-install-db") is None:
            return "the MariaDB server binaries (mariadbd, mariadb-install-db) are not installed"
        return None
    return f"no scratch server for kind {kind}"


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


class ScratchServer:
    """`with ScratchServer(kind) as source:` a running server; `source` connects to it over
    its socket as a user with every privilege."""

    def __init__(self, kind: str, parent: Path | None = None, *, port: int = 0) -> None:
        why = available(kind)
        if why:
            raise DatabaseError(f"cannot start a scratch {kind} server: {why}")
        self.kind = "postgresql" if kind == "postgresql" else "mariadb"
        self.port = port  # 0: the socket only; else also 127.0.0.1:port (the tests' servers)
        self.directory = Path(tempfile.mkdtemp(prefix="vault-scratch-db-", dir=parent))
        os.chmod(self.directory, 0o700)
        self.process: subprocess.Popen[bytes] | None = None
        self.run_as: str | None = None
        if self.kind == "postgresql" and os.geteuid() == 0:
            self.run_as = "postgres"
            entry = pwd.getpwnam("postgres")
            try:
                os.chown(self.directory, entry.pw_uid, entry.pw_gid)
            except OSError as exc:
                shutil.rmtree(self.directory, ignore_errors=True)
                raise DatabaseError(
                    f"cannot give the scratch directory to the postgres user: {exc.strerror}"
                ) from None
        self.log = self.directory / "server.log"
        self.source: DatabaseSource | None = None

    def __enter__(self) -> DatabaseSource:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, argv: list[str]) -> None:
        name = os.path.basename(argv[0])
        try:
            done = subprocess.run(
                argv, capture_output=True, user=self.run_as, timeout=START_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise DatabaseError(
                f"scratch {self.kind} server: {name} did not finish within {START_TIMEOUT:.0f} s"
            ) from None
        except OSError as exc:
            raise DatabaseError(f"scratch {self.kind} server: cannot run {name}: {exc}") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).decode("utf-8", "replace").strip().splitlines()
            raise DatabaseError(
                f"scratch {self.kind} server: {os.path.basename(argv[0])} failed: "
                + (tail[-1] if tail else f"exit code {done.returncode}")
            )

    def start(self) -> DatabaseSource:
        data = self.directory / "data"
        if self.kind == "postgresql":
            initdb, server = _pg_binary("initdb"), _pg_binary("postgres")
            assert initdb and server
            # The socket trusts its (private) directory's owner; a port, opened only by the
            # tests' servers, asks for a password.
            self._run([initdb, "-D", str(data), "-U", "vault", "--auth-local=trust",
                       "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8",
                       "--locale=C"])  # fmt: skip
            argv = [server, "-D", str(data), "-k", str(self.directory), "-c", "fsync=off",
                    "-c", "full_page_writes=off", "-c", "synchronous_commit=off",
                    "-c", f"listen_addresses={'127.0.0.1' if self.port else ''}",
                    "-c", f"port={self.port or 5432}"]  # fmt: skip
            socket = str(self.directory / f".s.PGSQL.{self.port or 5432}")
            self.source = DatabaseSource(
                kind="postgresql", name="scratch", databases=("postgres",), socket=socket,
                port=self.port or 5432, user="vault",
            )  # fmt: skip
        else:
            install, server = _mariadb_binary("mariadb-install-db"), _mariadb_binary("mariadbd")
            assert install and server
            user = pwd.getpwuid(os.geteuid()).pw_name
            self._run([install, "--no-defaults", f"--datadir={data}", f"--user={user}",
                       "--skip-test-db", "--auth-root-authentication-method=socket"])  # fmt: skip
            socket = str(self.directory / "mariadb.sock")
            network = (
                [f"--port={self.port}", "--bind-address=127.0.0.1"]
                if self.port
                else ["--skip-networking"]
            )
            argv = [server, "--no-defaults", f"--datadir={data}", f"--socket={socket}",
                    f"--pid-file={self.directory / 'mariadb.pid'}", f"--user={user}",
                    "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=16M",
                    "--innodb-flush-log-at-trx-commit=0", "--skip-log-bin",
                    "--skip-name-resolve", "--character-set-server=utf8mb4",
                    "--collation-server=utf8mb4_unicode_ci", *network]  # fmt: skip
            self.source = DatabaseSource(
                kind="mariadb", name="scratch", databases=("mysql",), socket=socket,
                user="root" if os.geteuid() == 0 else user,
            )  # fmt: skip
        try:
            with open(self.log, "ab") as log:
                self.process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    user=self.run_as,
                    start_new_session=True,
                )
        except OSError as exc:
            raise DatabaseError(f"cannot start the scratch {self.kind} server: {exc}") from None
        self._wait_ready(socket)
        return self.source

    def _wait_ready(self, socket: str) -> None:
        """Until the server answers a query on its socket (it logs, rather than signals, that
        it is up), or it exits, or the timeout passes."""
        assert self.process is not None and self.source is not None
        deadline = time.monotonic() + START_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DatabaseError(
                    f"the scratch {self.kind} server exited at start: {self._log_tail()}"
                )
            if os.path.exists(socket):
                try:
                    run_sql(self.source, self.source.databases[0], "SELECT 1", timeout=10)
                    return
                except DatabaseError as exc:
                    last = str(exc)
            time.sleep(0.1)  # polling a server's start-up: it gives no other signal
        raise DatabaseError(
            f"the scratch {self.kind} server did not answer within {START_TIMEOUT:.0f} s"
            + (f": {last}" if last else "")
        )

    def _log_tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        errors = [ln for ln in lines if "ERROR" in ln or "FATAL" in ln]
        return ((errors or lines or ["no log"])[-1])[:300]

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its directory and data."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.contextmanager
def scratch(kind: str, parent: Path | None = None) -> Iterator[DatabaseSource]:
    with ScratchServer(kind, parent) as source:
        yield source
