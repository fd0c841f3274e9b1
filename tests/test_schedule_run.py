"""`vault schedule run` end to end: real `vault` child processes, a real pre-backup hook, alerts
through a command hook, a webhook (a loopback HTTP server) and SMTP (a loopback mail server),
and SIGTERM stopping a scheduled backup cleanly."""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, RunCli
from tests.repos import RepoHandle
from tests.waiting import DirectoryChanges, wait_until


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def _policies(
    tmp_path: Path,
    repo: RepoHandle,
    sources: list[Path],
    *,
    backup_extra: str = "",
    schedule_extra: str = "",
    alerts: str = "",
) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir(exist_ok=True)
    secret = tmp_path / "passphrase"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    (directory / "backup.toml").write_text(
        "[backup]\n"
        f"repository = {json.dumps(str(repo))}\n"
        f"password_file = {json.dumps(str(secret))}\n"
        f"sources = {_toml_list([str(s) for s in sources])}\n"
        'tags = ["nightly"]\n' + backup_extra
    )
    (directory / "schedule.toml").write_text(
        "[schedule]\nretry_after_minutes = 0\n" + schedule_extra + "\n[alerts]\n" + alerts
    )
    return directory


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, object]]]]:
    received: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook/T0K3N-s3cr3t", received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def mail_server() -> Iterator[tuple[int, list[str], list[str]]]:
    """The smallest SMTP server smtplib will talk to: it keeps each message and login."""
    messages: list[str] = []
    logins: list[str] = []

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            self.wfile.write(b"220 test ESMTP\r\n")
            while line := self.rfile.readline():
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    self.wfile.write(b"250-test\r\n250 AUTH PLAIN\r\n")
                elif verb == b"AUTH":
                    logins.append(base64.b64decode(line.split()[-1]).decode())
                    self.wfile.write(b"235 welcome\r\n")
                elif verb == b"DATA":
                    self.wfile.write(b"354 go on\r\n")
                    body = []
                    while (text := self.rfile.readline()) not in (b".\r\n", b""):
                        body.append(text.decode())
                    messages.append("".join(body))
                    self.wfile.write(b"250 queued\r\n")
                elif verb == b"QUIT":
                    self.wfile.write(b"221 bye\r\n")
                    return
                else:
                    self.wfile.write(b"250 ok\r\n")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], messages, logins
    finally:
        server.shutdown()
        server.server_close()


def test_scheduled_backup_runs_the_pre_hook_first_and_saves_what_it_wrote(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    dump_dir = tmp_path / "pms-export"
    dump_dir.mkdir()
    hook = f"{sys.executable} -c \"open('{dump_dir}/db.sql', 'w').write('dump')\""
    policies = _policies(
        tmp_path,
        repo,
        [archive, dump_dir],
        backup_extra=f"pre_hook = {json.dumps(hook)}\n",
    )
    result = vault("schedule", "run", "--policy-dir", policies, "--once", "backup", password=None)
    assert result.code == 0, result.err
    assert "backup: done" in result.err
    snapshots = vault("snapshots", "-r", repo, "--json").json()
    assert len(snapshots) == 1 and snapshots[0]["tags"] == ["nightly"]
    listing = vault("ls", "latest", "-r", repo, "--json").json()
    assert any(str(entry["path"]).endswith("pms-export/db.sql") for entry in listing)


def test_failed_job_alerts_by_command_webhook_and_mail_without_secrets_or_paths(
    tmp_path: Path,
    repo: RepoHandle,
    vault: RunCli,
    archive: Path,
    webhook: tuple[str, list[dict[str, object]]],
    mail_server: tuple[int, list[str], list[str]],
) -> None:
    url, posted = webhook
    port, mails, logins = mail_server
    received = tmp_path / "alert.json"
    catcher = f"{sys.executable} -c \"import sys; open('{received}', 'w').write(sys.stdin.read())\""
    smtp_secret = tmp_path / "smtp-password"
    smtp_secret.write_text("smtp-pa55word\n")
    # The hook hangs longer than its timeout: the backup job fails, is retried, then alerts.
    policies = _policies(
        tmp_path,
        repo,
        [archive],
        backup_extra='pre_hook = "sleep 30"\npre_hook_timeout_seconds = 1\n',
        schedule_extra=f"log_file = {json.dumps(str(tmp_path / 'vault.log'))}\n",
        alerts=(
            f"command = {json.dumps(catcher)}\n"
            f"webhook_url = {json.dumps(url)}\n"
            'email_to = ["it@practice.example"]\n'
            f'smtp_host = "127.0.0.1"\nsmtp_port = {port}\nsmtp_starttls = false\n'
            'smtp_user = "vault"\n'
            f"smtp_password_file = {json.dumps(str(smtp_secret))}\n"
        ),
    )
    result = vault("schedule", "run", "--policy-dir", policies, "--once", "backup", password=None)
    assert result.code == 1
    assert result.err.count("backup: failed") == 2  # tried, retried
    assert "sent through 3 channel(s)" in result.err

    from_command = json.loads(received.read_text())
    assert len(posted) == 1 and len(mails) == 1
    log_file = (tmp_path / "vault.log").read_text()
    assert log_file.count("backup: failed") == 2 and "sent through 3 channel(s)" in log_file
    for text in (json.dumps(from_command), json.dumps(posted[0]), mails[0], result.err, log_file):
        assert PASSWORD not in text and "smtp-pa55word" not in text and "T0K3N" not in text
        assert str(tmp_path) not in text and str(archive) not in text
    for alert in (from_command, posted[0]):
        assert alert["job"] == "backup" and alert["kind"] == "failed"
        assert "pre-backup hook did not finish within 1 s" in str(alert["error"])
        assert alert["advice"]
    assert "Subject: vault on" in mails[0] and "what to do:" in mails[0]
    assert logins == ["\0vault\0smtp-pa55word"]  # the password file reached the server only
    assert vault("snapshots", "-r", repo, "--json").json() == []


def test_alert_test_reaches_the_webhook(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, webhook: tuple[str, list[dict[str, object]]]
) -> None:
    url, posted = webhook
    policies = _policies(tmp_path, repo, [tmp_path], alerts=f"webhook_url = {json.dumps(url)}\n")
    result = vault("schedule", "alert-test", "--policy-dir", policies)
    assert result.code == 0 and "1 channel" in result.out
    assert posted[0]["kind"] == "test"


def test_schedule_policy_errors_name_file_line_and_key(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    policies = _policies(tmp_path, repo, [tmp_path], schedule_extra='backup_at = "25:00"\n')
    result = vault("schedule", "run", "--policy-dir", policies, "--once", "backup")
    assert result.code == 2
    assert "schedule.toml, line 3: backup_at must be a time of day" in result.err
    (policies / "schedule.toml").write_text('[schedule]\ncheck_day = "someday"\n')
    result = vault("schedule", "run", "--policy-dir", policies, "--once", "check")
    assert result.code == 2 and "line 2: check_day must be a day of the week" in result.err
    (policies / "schedule.toml").write_text('[alerts]\nwebhook_url = "file:///etc/passwd"\n')
    result = vault("schedule", "alert-test", "--policy-dir", policies)
    assert result.code == 2 and "line 2: webhook_url must be an http" in result.err
    (policies / "backup.toml").write_text("[backup]\nsources = '/srv'\n")
    result = vault("schedule", "run", "--policy-dir", policies, "--once", "backup")
    assert result.code == 2 and "backup.toml, line 2: sources must be a list" in result.err


def test_sigterm_stops_the_scheduler_and_its_backup_cleanly(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    source = tmp_path / "big"
    source.mkdir()
    rng = random.Random(11)
    for i in range(8):  # incompressible: several packs, long enough to be stopped midway
        (source / f"scan{i}.raw").write_bytes(rng.randbytes(16 * 1024 * 1024))
    policies = _policies(tmp_path, repo, [source])
    assert repo.path is not None
    changes = DirectoryChanges(repo.path)
    env = {k: v for k, v in os.environ.items() if k != "VAULT_PASSWORD"}
    process = subprocess.Popen(
        [sys.executable, "-m", "vault", "schedule", "run", "--policy-dir", str(policies)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        # No backup yet: the scheduler runs the first one at once. Stop it after a pack.
        wait_until(lambda: len(repo.keys("data/")) >= 1, changes, timeout=120, process=process)
    finally:
        changes.close()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    log = err.decode()
    assert process.returncode == 0, log
    assert "stopped on request" in log and "scheduler stopped" in log
    assert "Traceback" not in log and "retrying" not in log
    assert repo.keys("locks") == []
    checked = vault("check", "-r", repo, "--json").json()
    assert checked["outcome"] == "PASS" and checked["unreferenced_packs"] == 0


def test_the_other_jobs_check_drill_keys_and_maintenance_do_their_work(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    policies = _policies(tmp_path, repo, [archive], schedule_extra="full_drill_every_days = 0\n")
    shipped = Path(__file__).resolve().parent.parent / "policies"
    (policies / "retention.toml").write_text((shipped / "retention.toml").read_text())

    def once(job: str) -> str:
        result = vault("schedule", "run", "--policy-dir", policies, "--once", job, password=None)
        assert result.code == 0, result.err
        return result.err

    once("backup")
    once("check")
    assert vault("status", "-r", repo, "--json").json()["last_check"]["read_percent"] == 25
    once("drill")
    assert "the last drill is recent enough" in once("drill")
    once("full-drill")
    drills = vault("drill", "history", "-r", repo, "--json").json()["drills"]
    assert [d["scenario"].split()[0] for d in drills] == ["sampled", "full"]
    assert "key rotation is ok" in once("keys")
    once("maintenance")  # nothing to forget yet (minimum_days), but the job runs clean
    assert len(vault("snapshots", "-r", repo, "--json").json()) == 1


def test_shipped_backup_and_schedule_policies_load() -> None:
    from vault.policy.files import load_backup_policy, load_schedule_policy

    shipped = Path(__file__).resolve().parent.parent / "policies"
    backup = load_backup_policy(shipped)
    schedule, alerts = load_schedule_policy(shipped)
    assert backup.sources and schedule.check_read_percent * 4 >= 100 and not alerts.configured


def test_schedule_refuses_to_start_without_sources_or_repository(
    tmp_path: Path, vault: RunCli
) -> None:
    policies = tmp_path / "p"
    policies.mkdir()
    (policies / "backup.toml").write_text('[backup]\nrepository = "/nowhere"\n')
    result = vault("schedule", "run", "--policy-dir", policies)
    assert result.code == 2 and "names no sources" in result.err
    (policies / "backup.toml").write_text('[backup]\nsources = ["/srv"]\n')
    result = vault("schedule", "run", "--policy-dir", policies)
    assert result.code == 2 and "no repository" in result.err


def test_the_pre_backup_hook_gets_a_scrubbed_environment(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = tmp_path / "hook-env.json"
    hook = (
        f"{sys.executable} -c \"import json, os; json.dump(dict(os.environ), open('{seen}', 'w'))\""
    )
    policies = _policies(
        tmp_path,
        repo,
        [tmp_path / "policies"],
        backup_extra=f'pre_hook = {json.dumps(hook)}\npre_hook_env = ["PGPASSFILE"]\n',
    )
    monkeypatch.setenv("VAULT_PASSWORD", PASSWORD)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAHOOKTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hook-must-not-see-this")
    monkeypatch.setenv("PGPASSFILE", "/etc/vault/pgpass")
    monkeypatch.setenv("UNRELATED_TOKEN", "t0k3n")
    result = vault("schedule", "run", "--policy-dir", policies, "--once", "backup")
    assert result.code == 0, result.err
    env = json.loads(seen.read_text())
    assert env["PGPASSFILE"] == "/etc/vault/pgpass" and "PATH" in env
    leaked = {k for k in env if k.startswith(("VAULT_", "AWS_")) or k == "UNRELATED_TOKEN"}
    assert leaked == set()
    assert PASSWORD not in json.dumps(env)


def test_scheduled_backups_that_fail_on_their_hook_count_in_the_evidence_pack(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    policies = _policies(
        tmp_path, repo, [archive], backup_extra='pre_hook = "false"\n'
    )  # the practice-management dump fails: no backup runs, twice (first try and retry)
    failed = vault("schedule", "run", "--policy-dir", policies, "--once", "backup", password=None)
    assert failed.code != 0
    events = vault("audit", "-r", repo, "--json").json()["events"]
    scheduled = [e for e in events if e["action"] == "scheduled-job"]
    assert len(scheduled) == 2 and all(e["result"] == "FAIL" for e in scheduled)
    assert all("pre-backup hook" in e["details"]["reason"] for e in scheduled)
    assert vault("backup", "-r", repo, archive).code == 0
    report = tmp_path / "evidence.md"
    vault("report", "-r", repo, "--policy-dir", policies, "--format", "md", "--out", report)
    line = next(x for x in report.read_text().splitlines() if "Backup runs" in x)
    assert "3 (1 successful, 2 failed, 0 missed): 33%" in line, line


def test_a_change_to_the_policy_files_seen_by_the_scheduler_is_audited(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    policies = _policies(tmp_path, repo, [archive])
    for _ in range(2):  # the second run sees the same files: nothing new to record
        done = vault("schedule", "run", "--policy-dir", policies, "--once", "backup", password=None)
        assert done.code == 0, done.err
    (policies / "schedule.toml").write_text(
        (policies / "schedule.toml")
        .read_text()
        .replace("retry_after_minutes = 0", "retry_after_minutes = 1")
    )
    assert (
        vault("schedule", "run", "--policy-dir", policies, "--once", "backup", password=None).code
        == 0
    )
    events = vault("audit", "-r", repo, "--json").json()["events"]
    changes = [e["details"] for e in events if e["action"] == "policy-change"]
    assert len(changes) == 2
    assert set(changes[0]["added"]) == {"backup.toml", "schedule.toml"}
    assert changes[1]["changed"] == ["schedule.toml"] and not changes[1]["added"]
