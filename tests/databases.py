"""Real MariaDB and PostgreSQL servers for the tests: started from the installed server binaries
in a temporary directory (vault's own scratch server, here also listening on a loopback port),
with an application user that logs in with a password over TCP, as a practice's database would
be reached; stopped by PID and removed with their data."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from tests.s3server import free_port_pairs
from vault.policy.databases import DatabaseSource
from vault.sources.db_loads import run_sql
from vault.sources.scratch_server import ScratchServer, available

APP_USER = "practice_app"


@dataclass
class PracticeServer:
    kind: str
    server: ScratchServer
    admin: DatabaseSource  # over the socket, every privilege
    port: int
    password: str
    password_file: Path

    def url(self, database: str, **query: str) -> str:
        scheme = "postgresql" if self.kind == "postgresql" else "mariadb"
        extra = "".join(f"&{k}={v}" for k, v in query.items())
        return (
            f"{scheme}://{APP_USER}@127.0.0.1:{self.port}/{database}"
            f"?password_file={self.password_file}{extra}"
        )

    def app(self, *databases: str) -> DatabaseSource:
        return DatabaseSource(
            kind=self.admin.kind,
            name=databases[0] if databases else "app",
            databases=databases,
            host="127.0.0.1",
            port=self.port,
            user=APP_USER,
            password_file=str(self.password_file),
        )

    def sql(self, database: str, statement: str) -> list[list[str]]:
        return run_sql(self.admin, database, statement)

    def create(self, database: str) -> None:
        if self.kind == "postgresql":
            self.sql("postgres", f'CREATE DATABASE "{database}" OWNER {APP_USER}')
        else:
            self.sql("", f"CREATE DATABASE `{database}`")

    def stop(self) -> None:
        self.server.stop()


def start(kind: str, workdir: Path) -> PracticeServer:
    why = available(kind)
    if why:
        raise RuntimeError(f"{kind}: {why} (scripts/test.sh installs it)")
    port = free_port_pairs(1)[0]
    # In the system temp dir: a PostgreSQL run as the postgres user could not reach into a
    # test's private tmp_path.
    server = ScratchServer(kind, None, port=port)
    admin = server.start()
    # Asserted absent from every command line; it holds what an option file or SQL must
    # escape (quotes, a backslash, '#', a space).
    password = "pw-" + secrets.token_hex(8) + " \"q\\b#s'x"
    password_file = workdir / f"{kind}-password"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    if kind == "postgresql":
        literal = password.replace("'", "''")
        run_sql(admin, "postgres", f"CREATE ROLE {APP_USER} LOGIN CREATEDB PASSWORD '{literal}'")
    else:
        literal = password.replace("\\", "\\\\").replace("'", "''")
        for host in ("127.0.0.1", "localhost"):
            run_sql(
                admin,
                "",
                f"CREATE USER '{APP_USER}'@'{host}' IDENTIFIED BY '{literal}'; "
                f"GRANT ALL PRIVILEGES ON *.* TO '{APP_USER}'@'{host}'",
            )
    return PracticeServer(kind, server, admin, port, password, password_file)
