"""Practice databases against real servers: MariaDB and PostgreSQL (Debian's packages), each
started by the tests on loopback with an application user that logs in with a password.

A dump is streamed into the snapshot and is consistent while a writer commits; a dump tool that
fails, is killed or is cut short makes the backup incomplete with one line (and the files are
still saved); a dump loads into a new database (`restore --database --into`) and a drill proves
it loads; a corrupted dump fails the drill with the loader's reason; and the password never
appears in any process's command line, in vault's output or in its errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import databases
from tests.conftest import PASSWORD, RunCli
from tests.databases import PracticeServer
from tests.repos import RepoHandle
from vault.sources.scratch_server import available

KINDS = [
    pytest.param(
        kind,
        marks=pytest.mark.skipif(
            available(kind) is not None,
            reason=f"{kind} server binaries are installed by scripts/test.sh (root, apt-get)",
        ),
    )
    for kind in ("mariadb", "postgresql")
]


@pytest.fixture(scope="module", params=KINDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PracticeServer]:
    db = databases.start(request.param, tmp_path_factory.mktemp(request.param))
    try:
        yield db
    finally:
        db.stop()


_counter = iter(range(10**6))


PG_PRACTICE = """
SET ROLE {user};
CREATE TABLE patient (id SERIAL PRIMARY KEY, name TEXT, born DATE, note TEXT);
CREATE TABLE appointment (id SERIAL PRIMARY KEY, patient INT REFERENCES patient, at TIMESTAMP);
CREATE TABLE image (id SERIAL PRIMARY KEY, patient INT, path TEXT, thumb BYTEA);
INSERT INTO patient (name, born, note)
  SELECT 'Patient ' || g || ' Ünïcødé 患者', DATE '1950-01-01' + g, repeat('history ', g % 50)
  FROM generate_series(1, {rows}) g;
INSERT INTO appointment (patient, at)
  SELECT 1 + g % {rows}, TIMESTAMP '2026-01-01' + g * INTERVAL '1 hour'
  FROM generate_series(1, {rows3}) g;
INSERT INTO image (patient, path, thumb)
  SELECT g, 'imaging/' || g || '.dcm', decode(md5(g::text) || '00ff', 'hex')
  FROM generate_series(1, {rows}) g;
"""

MARIADB_PRACTICE = """
CREATE TABLE patient (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(200), born DATE, note TEXT);
CREATE TABLE appointment (id INT AUTO_INCREMENT PRIMARY KEY, patient INT, at DATETIME);
CREATE TABLE image (id INT AUTO_INCREMENT PRIMARY KEY, patient INT, path VARCHAR(200), thumb BLOB);
INSERT INTO patient (name, born, note)
  SELECT CONCAT('Patient ', seq, ' Ünïcødé 患者'), DATE_ADD('1950-01-01', INTERVAL seq DAY),
         REPEAT('history ', seq % 50)
  FROM seq_1_to_{rows};
INSERT INTO appointment (patient, at)
  SELECT 1 + seq % {rows}, DATE_ADD('2026-01-01', INTERVAL seq HOUR) FROM seq_1_to_{rows3};
INSERT INTO image (patient, path, thumb)
  SELECT seq, CONCAT('imaging/', seq, '.dcm'), UNHEX(CONCAT(MD5(seq), '00ff'))
  FROM seq_1_to_{rows};
"""


def _practice(db: PracticeServer, rows: int = 200) -> str:
    """A new database shaped like a practice's: patients, appointments, an image index with a
    binary column and text in several scripts."""
    name = f"practice{next(_counter)}"
    db.create(name)
    script = PG_PRACTICE if db.kind == "postgresql" else MARIADB_PRACTICE
    db.sql(name, script.format(user=databases.APP_USER, rows=rows, rows3=rows * 3))
    return name


def _fingerprint(db: PracticeServer, database: str) -> dict[str, str]:
    """Each table's content as one digest (the same rows in the same order give the same one)."""
    out = {}
    for table in ("patient", "appointment", "image"):
        if db.kind == "postgresql":
            rows = db.sql(
                database, f"SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM {table} t"
            )
        else:
            rows = db.sql(database, f"CHECKSUM TABLE {table}")
            rows = [[rows[0][1]]]
        out[table] = rows[0][0]
    return out


def test_a_dump_streams_into_the_snapshot_and_loads_into_a_new_database(
    server: PracticeServer, repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    name = _practice(server)
    source = tmp_path / "imaging"
    source.mkdir()
    (source / "IMG0001.dcm").write_bytes(os.urandom(5000))
    done = vault("backup", "-r", repo.url, str(source), "--database", server.url(name), "--json")
    assert done.code == 0, done.err
    doc = done.json()
    [record] = doc["databases"]
    assert record["result"] == "PASS" and record["bytes"] > 10_000
    # The dump was taken first (default), then the files were walked.
    assert record["finished"] <= doc["walk"]["started"]
    assert doc["stats"]["files"] == 2

    # A plain restore brings the dump back as a file, byte for byte what was recorded.
    target = tmp_path / "restored"
    assert vault("restore", "latest", "-r", repo.url, "--target", str(target), "--verify").code == 0
    dump_file = target / record["path"].lstrip("/")
    assert dump_file.stat().st_size == record["bytes"]
    assert oct(dump_file.stat().st_mode & 0o777) == "0o600"

    # And it loads into a new database, holding the same rows.
    loaded = vault("restore", "latest", "-r", repo.url, "--database", name, "--into",
                   server.url(name + "_copy"), "--json")  # fmt: skip
    assert loaded.code == 0, loaded.err
    assert loaded.json()["bytes"] == record["bytes"]
    assert _fingerprint(server, name + "_copy") == _fingerprint(server, name)

    # A database that exists is never loaded over.
    again = vault("restore", "latest", "-r", repo.url, "--database", name, "--into",
                  server.url(name))  # fmt: skip
    assert again.code == 1
    assert f"database {name} already exists" in again.err
    assert "Traceback" not in again.err


def test_a_dump_taken_while_a_writer_commits_is_one_moment(
    server: PracticeServer, repo: RepoHandle, vault: RunCli
) -> None:
    """Each transaction of the writer adds one appointment and one image row together: a dump
    of one moment holds as many new rows in both tables."""
    name = _practice(server, rows=20_000)
    if server.kind == "postgresql":
        client = ["psql", "-X", "-q", "-h", str(Path(server.admin.socket).parent), "-p",
                  str(server.port), "-U", "vault", "-d", name]  # fmt: skip
    else:
        client = ["mariadb", "--no-defaults", f"--socket={server.admin.socket}", "-u", "root", name]
    writer = subprocess.Popen(
        client, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert writer.stdin is not None
    stop = threading.Event()
    committed = [0]

    def write() -> None:
        assert writer.stdin is not None
        begin = "BEGIN;" if server.kind == "postgresql" else "START TRANSACTION;"
        while not stop.is_set():
            writer.stdin.write(
                f"{begin} INSERT INTO appointment (patient, at) VALUES (1, NULL); "
                "INSERT INTO image (patient, path) VALUES (1, 'writer'); COMMIT;\n".encode()
            )
            writer.stdin.flush()
            committed[0] += 1

    pair = (
        "INSERT INTO appointment (patient, at) VALUES (1, NULL); "
        "INSERT INTO image (patient, path) VALUES (1, 'writer')"
    )
    server.sql(name, pair)  # one pair surely before the dump, one surely after
    thread = threading.Thread(target=write)
    thread.start()
    try:
        done = vault("backup", "-r", repo.url, "--database", server.url(name), "--json")
    finally:
        stop.set()
        thread.join()
        writer.stdin.close()
        writer.wait()
    server.sql(name, pair)
    assert done.code == 0, done.err
    assert committed[0] > 0
    loaded = vault("restore", "latest", "-r", repo.url, "--database", name, "--into",
                   server.url(name + "_moment"))  # fmt: skip
    assert loaded.code == 0, loaded.err
    appointments = int(
        server.sql(name + "_moment", "SELECT COUNT(*) FROM appointment WHERE at IS NULL")[0][0]
    )
    images = int(
        server.sql(name + "_moment", "SELECT COUNT(*) FROM image WHERE path = 'writer'")[0][0]
    )
    assert appointments == images
    final = int(server.sql(name, "SELECT COUNT(*) FROM image WHERE path = 'writer'")[0][0])
    assert 0 < images < final


def _backup_process(repo: RepoHandle, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "VAULT_PASSWORD": PASSWORD, **(repo.env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "vault", "backup", "-r", repo.url, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _command_lines() -> Iterator[tuple[int, bytes]]:
    """(pid, command line) of every process now running."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                yield int(entry), Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue  # it ended while we looked


def _command_policy(tmp_path: Path, name: str, command: list[str], extra: str = "") -> Path:
    """A policy directory whose backup.toml has one kind = "command" source."""
    policy = tmp_path / "policy"
    policy.mkdir(exist_ok=True)
    (policy / "backup.toml").write_text(
        f'[[database]]\nkind = "command"\nname = "{name}"\ncommand = {json.dumps(command)}\n'
        + extra
    )
    return policy


def _descendants(pid: int) -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                yield int(entry)


def test_the_password_is_never_on_a_command_line_in_output_or_in_errors(
    server: PracticeServer, repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    name = _practice(server, rows=30_000)
    backup = _backup_process(repo, "--database", server.url(name))
    seen_tool = False
    secret = server.password.encode()
    # Read every process's command line until the backup ends; the dump tool is among them.
    while backup.poll() is None:
        for _, cmdline in _command_lines():
            assert secret not in cmdline, cmdline.replace(b"\0", b" ")
            if b"mariadb-dump" in cmdline or b"pg_dump" in cmdline:
                seen_tool = True
    out, err = backup.communicate()
    assert backup.returncode == 0, err
    assert seen_tool, "the scan never overlapped the dump tool"
    assert server.password not in out + err
    # A failure message does not carry it either, nor does the audit log or a JSON report.
    wrong = tmp_path / "wrong"
    wrong.write_text(server.password[::-1] + "\n")
    wrong.chmod(0o600)
    wrong_url = server.url(name).replace(str(server.password_file), str(wrong))
    failed = vault("backup", "-r", repo.url, "--database", wrong_url, "--json")
    assert failed.code == 3
    assert server.password[::-1] not in failed.out + failed.err
    log = vault("audit", "-r", repo.url, "--json")
    assert server.password not in log.out
    # Loading it back: the loader's command line holds no password either.
    first = vault("snapshots", "-r", repo.url, "--json").json()[0]["id"]
    env = {**os.environ, "VAULT_PASSWORD": PASSWORD, **(repo.env or {})}
    restore = subprocess.Popen(
        [sys.executable, "-m", "vault", "restore", first, "-r", repo.url, "--database", name,
         "--into", server.url(name + "_loaded")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    seen_loader = False
    while restore.poll() is None:
        for _, cmdline in _command_lines():
            assert secret not in cmdline, cmdline.replace(b"\0", b" ")
            seen_loader = seen_loader or b"pg_restore" in cmdline or b"--binary-mode" in cmdline
    out, err = restore.communicate()
    assert restore.returncode == 0, err
    assert seen_loader, "the scan never overlapped the loader"
    assert server.password not in out + err


def test_a_dump_that_fails_leaves_the_files_saved_and_the_snapshot_incomplete(
    server: PracticeServer, repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    name = _practice(server)
    source = tmp_path / "imaging"
    source.mkdir()
    (source / "pan.dcm").write_bytes(b"x" * 1000)
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    url = server.url(name).replace(str(server.password_file), str(wrong))
    done = vault("backup", "-r", repo.url, str(source), "--database", url)
    assert done.code == 3
    lines = [ln for ln in done.err.splitlines() if ln.startswith("vault: error:")]
    assert len(lines) == 2, done.err
    assert f"database {name}/{name}" in lines[0]
    assert "Access denied" in lines[0] or "password authentication failed" in lines[0]
    assert "incomplete: 1 database dump(s) failed" in lines[1]
    listing = vault("ls", "-r", repo.url, "latest").out
    assert "pan.dcm" in listing and ".sql" not in listing and ".pgdump" not in listing

    status = vault("status", "-r", repo.url, "--json").json()
    assert status["level"] == "FAIL"
    assert any(f"database dump of {name}/{name} failed" in f["message"] for f in status["findings"])

    missing = vault("backup", "-r", repo.url, "--database", server.url("no_such_database"))
    assert missing.code == 3
    assert "no_such_database" in missing.err and "Traceback" not in missing.err


def _wrapper(tmp_path: Path, tool: str, filter_command: str) -> dict[str, str]:
    """A PATH on which `tool` runs the real one through a filter: a dump tool that misbehaves
    the way a real one can (killed, cut short, writing damaged output) while exiting 0."""
    real = subprocess.run(
        ["sh", "-c", f"command -v {tool}"], capture_output=True, text=True
    ).stdout.strip()
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    script = bindir / tool
    script.write_text(f'#!/bin/sh\n"{real}" "$@" | {filter_command}\n')
    script.chmod(0o755)
    return {"PATH": f"{bindir}:{os.environ['PATH']}"}


def _dump_tool(server: PracticeServer) -> str:
    return "pg_dump" if server.kind == "postgresql" else "mariadb-dump"


def test_a_dump_cut_short_or_killed_mid_stream_fails_the_backup_cleanly(
    server: PracticeServer,
    repo: RepoHandle,
    vault: RunCli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = _practice(server, rows=2000)
    # Cut short with exit status 0: only the completion line (MariaDB) or the format's own
    # header (PostgreSQL, whose pg_dump exits non-zero when cut) can tell.
    cut = "head -c 3000" if server.kind != "postgresql" else "tail -c +7"
    for key, value in _wrapper(tmp_path, _dump_tool(server), cut).items():
        monkeypatch.setenv(key, value)
    done = vault("backup", "-r", repo.url, "--database", server.url(name))
    assert done.code == 3, done.err
    assert (
        ("cut short" in done.err) if server.kind != "postgresql" else ("custom format" in done.err)
    )
    monkeypatch.undo()

    # Killed by a signal mid-stream: the tool itself, in a real backup process.
    name = _practice(server, rows=60_000)
    backup = _backup_process(repo, "--database", server.url(name))
    killed = False
    while backup.poll() is None and not killed:
        for pid in _descendants(backup.pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if _dump_tool(server).encode() in cmdline:
                os.kill(pid, signal.SIGKILL)
                killed = True
    _, err = backup.communicate()
    assert killed, "the dump finished before it could be killed"
    assert backup.returncode == 3, err
    assert "was killed by signal 9" in err
    assert "Traceback" not in err
    # The repository is whole: the next backup and a check succeed.
    assert vault("backup", "-r", repo.url, "--database", server.url(name)).code == 0
    assert vault("check", "-r", repo.url, "--read-data").code == 0


def test_a_drill_loads_the_dump_and_a_corrupted_dump_fails_it(
    server: PracticeServer,
    repo: RepoHandle,
    vault: RunCli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = _practice(server)
    assert vault("backup", "-r", repo.url, "--database", server.url(name)).code == 0
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "drill.toml").write_text(
        '[database]\nqueries = ["SELECT id FROM patient WHERE id = 7"]\n'
        "min_rows = { patient = 200, appointment = 600 }\n"
    )
    drill = vault("drill", "-r", repo.url, "--database", "--policy-dir", str(policy), "--json")
    assert drill.code == 0, drill.err
    [check] = drill.json()["databases"]
    assert check["result"] == "PASS" and check["scratch_dropped"]
    assert check["tables"] == 3 and check["rows"] == 200 + 600 + 200
    assert check["queries"] == [{"query": 1, "rows": 1, "result": "PASS"}]
    if server.kind != "postgresql":
        assert check["check_table"] == {"tables": 3, "not_ok": 0}

    # The policy asks for more than the dump holds: the drill says what is missing.
    (policy / "drill.toml").write_text("[database]\ncheck = true\nmin_rows = { patient = 201 }\n")
    short = vault("drill", "-r", repo.url, "--policy-dir", str(policy), "--json")
    assert short.code == 1
    assert "table patient holds 200 rows, fewer than 201" in short.json()["failure_reasons"][-1]

    # A dump damaged on its way out of the tool (complete, exit status 0) is saved as it came,
    # and the drill finds it does not load.
    damage = (
        "sed 's/INSERT INTO `appointment`/INSERT INTO `appointment` VALUES VALUES/'"
        if server.kind != "postgresql"
        else f'{sys.executable} -c "import sys; d = sys.stdin.buffer.read(); '
        'sys.stdout.buffer.write(d[:len(d)//2] + bytes(64) + d[len(d)//2 + 64:])"'
    )
    for key, value in _wrapper(tmp_path, _dump_tool(server), damage).items():
        monkeypatch.setenv(key, value)
    assert vault("backup", "-r", repo.url, "--database", server.url(name)).code == 0
    monkeypatch.undo()
    broken = vault("drill", "-r", repo.url, "--database", "--json")
    assert broken.code == 1
    reason = broken.json()["failure_reasons"][-1]
    assert reason.startswith(f"database {name}/{name}: loading into vault_drill_")
    assert "ERROR" in reason or "error" in reason, reason
    assert broken.json()["databases"][0]["scratch_dropped"]


def test_dumps_after_files_and_a_second_night_deduplicates(
    server: PracticeServer, repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    # About 20 MB of dump: forty chunks of vault's 512 KiB minimum, so a night's change can
    # be told from the whole.
    name = _practice(server, rows=50_000)
    source = tmp_path / "imaging"
    source.mkdir()
    (source / "a.dcm").write_bytes(b"a" * 100)
    first = vault("backup", "-r", repo.url, str(source), "--database", server.url(name),
                  "--dumps-after-files", "--json").json()  # fmt: skip
    [record] = first["databases"]
    assert first["walk"]["finished"] <= record["started"]
    # The next night: a few new appointments. Only the chunks around them are new.
    server.sql(name, "INSERT INTO appointment (patient, at) VALUES (1, NULL), (2, NULL)")
    second = vault("backup", "-r", repo.url, str(source), "--database", server.url(name),
                   "--json").json()  # fmt: skip
    # Changed: the header's and footer's times, the table's AUTO_INCREMENT, its last rows:
    # three places, each costing the chunk around it (and its neighbour when a boundary
    # moves). Where the boundaries fall depends on the repository's random chunker seed, so
    # one run added 28 % of the dump: the bound is half, which no backup that failed to
    # deduplicate (all of it new) can meet.
    added = second["stats"]["bytes_added"]
    assert 0 < added < second["databases"][0]["bytes"] / 2, (added, second["databases"][0]["bytes"])
    # status shows when the database and the files were captured, and their skew.
    moment = vault("status", "-r", repo.url, "--json").json()["last_backup"]["databases"]
    assert [d["database"] for d in moment["dumps"]] == [name]
    walk = second["walk"]
    assert moment["files_walked"] == walk
    assert 0 <= moment["skew_seconds"] <= 60


def test_socket_and_option_file_forms_reach_the_same_server(
    server: PracticeServer, repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    name = _practice(server)
    scheme = "postgresql" if server.kind == "postgresql" else "mariadb"
    user = server.admin.user
    by_socket = f"{scheme}://{user}@/{name}?socket={server.admin.socket}&name=bysocket"
    urls = [by_socket, f"{scheme}://{user}@unix({server.admin.socket})/{name}?name=byunix"]
    if server.kind != "postgresql":
        # The server's own client option file, as on a Debian host (/etc/mysql/debian.cnf).
        options = tmp_path / "client.cnf"
        quoted = server.password.replace("\\", "\\\\").replace('"', '\\"')
        options.write_text(
            f'[client]\nuser={databases.APP_USER}\npassword="{quoted}"\n'
            f"host=127.0.0.1\nport={server.port}\nprotocol=TCP\n"
        )
        options.chmod(0o600)
        urls.append(f"mariadb:///{name}?option_file={options}&name=byoptions")
    args = [a for url in urls for a in ("--database", url)]
    done = vault("backup", "-r", repo.url, *args, "--json")
    assert done.code == 0, done.err
    records = done.json()["databases"]
    assert [r["result"] for r in records] == ["PASS"] * len(urls)
    # The same rows each way: only the dump's own header (its time, its host) may differ.
    sizes = [r["bytes"] for r in records]
    assert max(sizes) - min(sizes) < 1000, sizes


def test_a_command_source_streams_any_program_and_gets_no_secret(
    repo: RepoHandle, vault: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kind = "command" (a vendor's export, a SQL Server backup fetched from another host):
    its stdout is the dump, its exit status decides, and it runs without vault's secrets in
    its environment."""
    exporter = tmp_path / "export.py"
    exporter.write_text(
        "import os, sys\n"
        "leaked = [k for k in os.environ if k.startswith(('VAULT_', 'AWS_'))]\n"
        "sys.stdout.write('EXPORT ' + ','.join(leaked) + '\\n' + 'row\\n' * 50000)\n"
        "sys.exit(int(os.environ.get('EXPORT_FAIL', '0')))\n"
    )
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-for-the-test")
    policy = _command_policy(tmp_path, "vendor", [sys.executable, str(exporter)],
                             'path = "/exports/vendor.dat"\nenv = ["EXPORT_FAIL"]\n')  # fmt: skip
    done = vault(
        "backup", "-r", repo.url, "--policy-databases", "--policy-dir", str(policy), "--json"
    )
    assert done.code == 0, done.err
    [record] = done.json()["databases"]
    assert record["path"] == "/exports/vendor.dat"
    assert record["bytes"] == len("EXPORT \n") + 4 * 50000
    target = tmp_path / "out"
    assert vault("restore", "latest", "-r", repo.url, "--target", str(target)).code == 0
    first_line = (target / "exports/vendor.dat").read_text().splitlines()[0]
    assert first_line == "EXPORT "  # no VAULT_* or AWS_* variable reached it

    monkeypatch.setenv("EXPORT_FAIL", "4")
    failed = vault("backup", "-r", repo.url, "--policy-databases", "--policy-dir", str(policy))
    assert failed.code == 3
    assert "database vendor (python" in failed.err and "exited with code 4" in failed.err


def test_the_scheduler_dumps_backup_toml_databases_into_the_nightly_snapshot(
    server: PracticeServer, repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    name = _practice(server)
    secret = tmp_path / "passphrase"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "backup.toml").write_text(
        f'[backup]\nrepository = "{repo.url}"\npassword_file = "{secret}"\ntags = ["nightly"]\n\n'
        f'[[database]]\nkind = "{server.admin.kind}"\nname = "pms"\nhost = "127.0.0.1"\n'
        f'port = {server.port}\nuser = "{databases.APP_USER}"\n'
        f'password_file = "{server.password_file}"\ndatabases = ["{name}"]\n'
    )
    (policies / "schedule.toml").write_text("[schedule]\nretry_after_minutes = 0\n")
    done = vault("schedule", "run", "--policy-dir", policies, "--once", "backup", password=None)
    assert done.code == 0, done.err
    listing = vault("ls", "latest", "-r", repo.url, "--json").json()
    suffix = ".pgdump" if server.kind == "postgresql" else ".sql"
    assert any(str(e["path"]) == f"/databases/pms/{name}{suffix}" for e in listing)

    # A mistake in a [[database]] table stops the scheduler at start, with file and key.
    (policies / "backup.toml").write_text(
        f'[backup]\nrepository = "{repo.url}"\n\n[[database]]\nkind = "mariadb"\ndatabase = ["x"]\n'
    )
    bad = vault("schedule", "run", "--policy-dir", policies, "--once", "backup", password=None)
    assert bad.code == 2
    assert "[[database]] number 1: unknown key 'database'" in bad.err


def test_a_password_file_others_can_read_is_refused(
    server: PracticeServer, repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    name = _practice(server)
    loose = tmp_path / "loose-password"
    loose.write_text(server.password + "\n")
    loose.chmod(0o644)
    done = vault("backup", "-r", repo.url, "--database",
                 server.url(name).replace(str(server.password_file), str(loose)))  # fmt: skip
    assert done.code == 3
    assert "is accessible to group or others (mode 0644)" in done.err


def test_sigterm_during_a_dump_stops_the_tool_and_writes_no_snapshot(
    repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    endless = tmp_path / "endless.py"
    endless.write_text(
        "import sys\nwhile True:\n    sys.stdout.write('INSERT INTO log VALUES (1);\\n' * 1000)\n"
    )
    policy = _command_policy(tmp_path, "endless", [sys.executable, str(endless)])
    backup = _backup_process(repo, "--policy-databases", "--policy-dir", str(policy))
    tool = None
    while tool is None and backup.poll() is None:
        for pid in _descendants(backup.pid):
            try:
                if str(endless).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    tool = pid
            except OSError:
                continue
    assert tool is not None, backup.communicate()
    backup.send_signal(signal.SIGTERM)
    _, err = backup.communicate()
    assert backup.returncode == 130, err
    assert "no snapshot was written" in err and "Traceback" not in err
    assert not Path(f"/proc/{tool}").exists(), "the dump tool outlived vault"
    assert vault("snapshots", "-r", repo.url, "--json").json() == []
    assert vault("check", "-r", repo.url).code == 0


def test_a_dump_that_hangs_is_stopped_at_its_timeout_with_its_children(
    repo: RepoHandle, tmp_path: Path
) -> None:
    """A tool that never writes (a lock wait, a server-side backup writing its file first) is
    stopped by the timer, and so are the processes it started."""
    marker = f"vault-hang-{os.getpid()}"
    script = tmp_path / "hang.py"
    script.write_text(
        "import subprocess, sys\n"
        # Both wait for a signal that never comes: a tool that hangs without writing.
        f"subprocess.Popen([sys.executable, '-c', 'import signal; signal.pause()', '{marker}'])\n"
        "import signal\nsignal.pause()\n"
    )
    policy = _command_policy(
        tmp_path, "hang", [sys.executable, str(script)], "timeout_seconds = 2\n"
    )
    backup = _backup_process(repo, "--policy-databases", "--policy-dir", str(policy))
    _, err = backup.communicate(timeout=60)
    assert backup.returncode == 3, err
    assert "database hang (python" in err and "did not finish within 2 s" in err
    left = [pid for pid, cmdline in _command_lines() if marker.encode() in cmdline]
    assert not left, "the tool's child outlived the timeout"


def test_a_dump_path_taken_by_a_file_is_left_out_and_never_loaded(
    server: PracticeServer, repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    name = _practice(server)
    source = tmp_path / "exports"
    source.mkdir()
    suffix = ".pgdump" if server.kind == "postgresql" else ".sql"
    (source / f"{name}{suffix}").write_text("not a dump: a file the practice keeps here")
    done = vault("backup", "-r", repo.url, str(source), "--database",
                 server.url(name, path=str(source)), "--json")  # fmt: skip
    assert done.code == 3
    assert "is already taken by a backed-up file" in done.err
    assert [r["result"] for r in done.json()["databases"]] == ["FAIL"]
    loaded = vault("restore", "latest", "-r", repo.url, "--database", name, "--into",
                   server.url(name + "_x"))  # fmt: skip
    assert loaded.code == 2 and "holds no dump of database" in loaded.err


def test_a_command_dump_is_not_loaded_into_a_server_and_a_drill_finds_the_nightly_dumps(
    server: PracticeServer, repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    name = _practice(server)
    policy = _command_policy(tmp_path, "vendor", [sys.executable, "-c", "print(1)"])
    done = vault("backup", "-r", repo.url, "--database", server.url(name),
                 "--policy-databases", "--policy-dir", str(policy))  # fmt: skip
    assert done.code == 0, done.err
    refused = vault("restore", "latest", "-r", repo.url, "--database", "vendor", "--into",
                    server.url("vendor_copy"))  # fmt: skip
    assert refused.code == 2 and "restore it as a file" in refused.err
    nightly = vault("snapshots", "-r", repo.url, "--json").json()[-1]["id"]
    # A snapshot without dumps comes after (a PACS's, say): the drill proves the nightly's.
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.dcm").write_bytes(b"x")
    assert vault("backup", "-r", repo.url, str(other)).code == 0
    drill = vault("drill", "-r", repo.url, "--database", "--json")
    assert drill.code == 0, drill.err
    [check] = drill.json()["databases"]
    assert check["snapshot_id"] == nightly and check["result"] == "PASS"
    status = vault("status", "-r", repo.url, "--json").json()
    assert status["last_backup"]["databases"]["snapshot_id"] == nightly


def test_a_drill_on_a_configured_server_drops_its_scratch_database_and_the_pack_shows_the_skew(
    server: PracticeServer, repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    name = _practice(server)
    source = tmp_path / "imaging"
    source.mkdir()
    (source / "ceph.dcm").write_bytes(b"c" * 2000)
    assert vault("backup", "-r", repo.url, str(source), "--database", server.url(name)).code == 0
    policy = tmp_path / "policy"
    policy.mkdir()
    scheme = "postgresql" if server.kind == "postgresql" else "mariadb"
    (policy / "drill.toml").write_text(
        "[database]\ncheck = true\n"
        f'server = "{scheme}://{databases.APP_USER}@127.0.0.1:{server.port}/'
        f'?password_file={server.password_file}"\n'
    )

    def scratch_databases() -> list[str]:
        sql = (
            "SELECT datname FROM pg_database WHERE datname LIKE 'vault_drill_%'"
            if server.kind == "postgresql"
            else "SELECT schema_name FROM information_schema.schemata "
            "WHERE schema_name LIKE 'vault_drill_%'"
        )
        return [
            row[0] for row in server.sql("postgres" if server.kind == "postgresql" else "", sql)
        ]

    before = scratch_databases()
    drill = vault("drill", "-r", repo.url, "--policy-dir", str(policy), "--json")
    assert drill.code == 0, drill.err
    [check] = drill.json()["databases"]
    assert check["server"] == f"configured (127.0.0.1:{server.port})"
    assert check["scratch_dropped"] and check["rows"] == 1000
    assert scratch_databases() == before

    # The evidence pack names the dump, its result and its skew from the file walk.
    pack = vault("report", "-r", repo.url, "--format", "md")
    assert pack.code in (0, 1), pack.err
    assert f"Database {name}/{name}" in pack.out
    assert "from the file walk (skew)" in pack.out
    assert "database check: PASS" in vault("drill", "report", "-r", repo.url, "--format", "md").out
