"""Loads and queries with a database server's own clients: a dump streamed into a database
created for it (mariadb, pg_restore), and SQL statements run with mariadb or psql."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator

from vault.errors import VaultError
from vault.policy.databases import DatabaseSource
from vault.sources.db_tools import (
    DatabaseError,
    Invocation,
    StderrTail,
    base_environment,
    client_tool,
    exit_reason,
    find_tool,
    last_line,
    mariadb_connection,
    pg_connection,
    spawn,
)


def run_sql(
    source: DatabaseSource, database: str, sql: str, timeout: float = 600
) -> list[list[str]]:
    """Rows (tab-separated fields) of one SQL statement run with the server's own client."""
    if source.kind == "postgresql":
        args, extra = pg_connection(source)
        inv = Invocation(
            [client_tool("postgresql"), "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
             *args, "--dbname", database, "-c", sql],
            {**base_environment(), **extra},
        )  # fmt: skip
    else:
        args, text = mariadb_connection(source)
        inv = Invocation(
            [client_tool(source.kind), *args, "--batch", "--skip-column-names", "--raw",
             "--default-character-set=utf8mb4",
             *([database] if database else []), "-e", sql],
            base_environment(),
            text,
        )  # fmt: skip
    process = spawn(inv)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise DatabaseError(
            f"a query on {source.where()} did not finish within {timeout:.0f} s"
        ) from None
    if process.returncode != 0:
        why = last_line(err) or exit_reason(process.returncode)
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
        args, extra = pg_connection(source)
        tool = find_tool(["pg_restore"], "a PostgreSQL load")
        return Invocation(
            [tool, "--exit-on-error", "--no-owner", "--no-privileges", *args, "--dbname", database],
            {**base_environment(), **extra},
        )
    args, text = mariadb_connection(source)
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
    process = spawn(invocation, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert process.stdin is not None and process.stderr is not None
    stderr = StderrTail(process.stderr)
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
        why = last_line(err)
        raise DatabaseError(
            f"loading into {database} on {source.where()}: {os.path.basename(invocation.argv[0])} "
            f"{exit_reason(code)}" + (f": {why}" if why else "") + partial
        )
    return total
