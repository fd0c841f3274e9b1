"""A real `vault serve` for the console tests: repositories made with the real command line,
users made with `vault console user add`, the server a child process on a free loopback
port (readiness read from its stdout, stopped by PID), and a small HTTPS client that checks
the server's certificate against the one the server generated."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.orthanc import free_port
from vault.console import totp

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "lantern orbit velvet cascade 42"


def run_vault(
    *args: str, env: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "vault", *args], env=env, capture_output=True, text=True, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"vault {' '.join(args)} failed: {done.stderr}")
    return done


def make_repository(root: Path, source: Path, env: dict[str, str]) -> Path:
    repo = root / "repo"
    run_vault("init", "--repo", str(repo), env=env)
    run_vault("backup", "--repo", str(repo), str(source), env=env)
    return repo


def totp_secret_of(uri: str) -> str:
    """The base32 secret of an otpauth:// enrolment URI."""
    return urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)["secret"][0]


@dataclass
class Account:
    name: str
    role: str
    password: str  # the one-time one until `fresh` is False
    totp_secret: str
    fresh: bool = True
    used_step: int = 0  # the server takes each code once: the next sign-in takes a later one

    def code(self) -> str:
        """A code the server would take now: this step's, or the next one's when this one is
        used (the server accepts one step of clock drift either side)."""
        if not self.totp_secret:
            return ""
        return totp.hotp(self.totp_secret, max(totp.step_of(time.time()), self.used_step + 1))

    def take(self) -> str:
        """`code()`, for a sign-in that will pass (and so use it up)."""
        code = self.code()
        if self.totp_secret:
            self.used_step = max(totp.step_of(time.time()), self.used_step + 1)
        return code


@dataclass
class ConsoleServer:
    root: Path
    config: Path
    env: dict[str, str]
    port: int = 0
    process: subprocess.Popen[str] | None = None
    fingerprint: str = ""
    accounts: dict[str, Account] = field(default_factory=dict)
    _clients: dict[str, Client] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def state(self) -> Path:
        return self.root / "console-state"

    @property
    def log(self) -> Path:
        return self.root / "serve.log"

    def add_user(self, name: str, role: str, *extra: str) -> Account:
        done = run_vault(
            "console",
            "user",
            "add",
            name,
            "--role",
            role,
            "--config",
            str(self.config),
            "--json",
            *extra,
            env=self.env,
        )
        doc = json.loads(done.stdout)
        secret = totp_secret_of(doc["totp_uri"]) if doc["totp_uri"] else ""
        account = Account(name, role, doc["one_time_password"], secret)
        self.accounts[name] = account
        return account

    def start(self) -> ConsoleServer:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vault", "serve", "--config", str(self.config)],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=open(self.log, "a"),  # noqa: SIM115
            text=True,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        # The server prints its URL once it listens; a failed start ends the output instead.
        first = self.process.stdout.readline()
        found = re.search(r"https://127\.0\.0\.1:(\d+)/", first)
        if not found:
            self.stop()
            raise AssertionError(f"vault serve did not start: {first!r} {self.log.read_text()}")
        self.port = int(found[1])
        self.fingerprint = self.process.stdout.readline().split()[-1]
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def client(self) -> Client:
        return Client(self.port, self.state / "console-cert.pem")

    def session(self, name: str) -> Client:
        """One signed-in client per account, kept: the server takes each TOTP code once, so
        signing in again and again in one 30 s step would be refused."""
        if name not in self._clients:
            self._clients[name] = self.signed_in(name)
        return self._clients[name]

    def signed_in(self, name: str) -> Client:
        """A new client signed in as `name` (the one-time password changed on first use)."""
        account = self.accounts[name]
        web = self.client()
        response = web.sign_in(account.name, account.password, account.take())
        assert response.status == 303, (response.status, response.text)
        if account.fresh:
            assert response.location == "/password"
            changed = web.post(
                "/password",
                {"current": account.password, "new": NEW_PASSWORD, "again": NEW_PASSWORD},
            )
            assert changed.status == 303, changed.text
            account.password, account.fresh = NEW_PASSWORD, False
        return web


def write_config(
    root: Path, repositories: dict[str, Path], password_file: Path, **console: Any
) -> Path:
    port = free_port()
    lines = [
        "[console]",
        f'listen = "127.0.0.1:{port}"',
        f'state_dir = "{root / "console-state"}"',
        f'restore_root = "{root / "restores"}"',
    ]
    lines += [f"{k} = {json.dumps(v)}" for k, v in console.items()]
    for name, repo in repositories.items():
        policy = root / f"policies-{name}"
        policy.mkdir(exist_ok=True)
        lines += [
            "",
            "[[repository]]",
            f'name = "{name}"',
            f'url = "{repo}"',
            f'password_file = "{password_file}"',
            f'policy_dir = "{policy}"',
        ]
    config = root / "console.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    text: str
    set_cookies: list[str] = field(default_factory=list)

    @property
    def location(self) -> str:
        return self.headers.get("location", "")


class Client:
    """HTTPS to the console with its cookies, no redirects followed, the certificate checked."""

    def __init__(self, port: int, cafile: Path) -> None:
        self.port = port
        self.context = ssl.create_default_context(cafile=str(cafile))
        self.cookies: dict[str, str] = {}

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, str] | None = None,
        headers: dict[str, str | None] | None = None,  # None: leave that header out
    ) -> Reply:
        connection = http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=self.context, timeout=60
        )
        sent = {"cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        data = None
        if body is not None:
            data = urllib.parse.urlencode(body)
            sent["content-type"] = "application/x-www-form-urlencoded"
            sent["origin"] = f"https://127.0.0.1:{self.port}"
        for key, value in (headers or {}).items():
            if value is None:
                sent.pop(key, None)
            else:
                sent[key] = value
        try:
            connection.request(method, path, body=data, headers=sent)
            response = connection.getresponse()
            text = response.read().decode("utf-8", "replace")
            for name, value in response.getheaders():
                if name.lower() == "set-cookie":
                    key, _, rest = value.partition("=")
                    content = rest.split(";", 1)[0]
                    if "max-age=0" in value.lower() or not content.strip('"'):
                        self.cookies.pop(key, None)
                    else:
                        self.cookies[key] = content
            headers = {k.lower(): v for k, v in response.getheaders()}
            cookies = [v for k, v in response.getheaders() if k.lower() == "set-cookie"]
            return Reply(response.status, headers, text, cookies)
        finally:
            connection.close()

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def csrf(self, path: str = "/") -> str:
        page = self.get(path)
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found, f"no CSRF token on {path}: {page.status}"
        return found[1]

    def post(self, path: str, fields: dict[str, str], *, csrf_from: str = "/password") -> Reply:
        return self.request("POST", path, {**fields, "csrf": self.csrf(csrf_from)})

    def sign_in(self, name: str, password: str, code: str) -> Reply:
        page = self.get("/login")  # the sign-in form's token (a signed-in page has another)
        found = re.search(
            r'action="/login"[^>]*>\s*<input type="hidden" name="csrf" value="([^"]+)"', page.text
        )
        assert found, f"no sign-in form on /login: {page.status}"
        token = found[1]
        return self.request(
            "POST", "/login", {"name": name, "password": password, "code": code, "csrf": token}
        )
