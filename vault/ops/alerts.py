"""Alerts for a failed or missed job: a command hook, a webhook POST and/or e-mail over SMTP.

An alert names the job, the error and what to do. It never carries a secret or PHI: the text
passes through `Scrubber`, which removes every configured secret value and every file-system
path (folder names in an imaging archive can be patient names). A channel that fails is logged
and the others still run: an alert must not be lost because one route is down.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import re
import shlex
import socket
import subprocess
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from vault.policy.files import AlertPolicy

log = logging.getLogger("vault.schedule")

HOOK_TIMEOUT_SECONDS = 60
NETWORK_TIMEOUT_SECONDS = 20
# An absolute path up to the next quote, colon or end of line (paths may contain spaces).
_PATH = re.compile(r"(?<![\w:/])/[^\n:'\"]*")
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)


class Scrubber:
    """Removes secrets and paths from text that leaves the process (logs, alerts)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "<secret>")
        text = _URL.sub("<url>", text)
        return _PATH.sub("<path>", text)


@dataclass(frozen=True)
class Alert:
    job: str
    error: str
    advice: str
    host: str
    time: str
    kind: str = "failed"  # failed | missed

    @property
    def subject(self) -> str:
        return f"vault on {self.host}: {self.job} {self.kind}"

    def text(self) -> str:
        return (
            f"{self.subject}\n\nerror: {self.error}\nwhat to do: {self.advice}\ntime: {self.time}\n"
        )


def make_alert(job: str, error: str, advice: str, scrub: Scrubber, kind: str = "failed") -> Alert:
    return Alert(
        job=job,
        error=scrub(error),
        advice=scrub(advice),
        host=socket.gethostname(),
        time=datetime.now(UTC).isoformat(timespec="seconds"),
        kind=kind,
    )


def _read_secret_file(name: str) -> str:
    with open(name, encoding="utf-8") as handle:
        return handle.readline().rstrip("\r\n")


def secrets_of(policy: AlertPolicy) -> list[str]:
    """Values no alert or log may contain: the webhook URL (tokens live in it), the SMTP
    password."""
    found = [policy.webhook_url]
    if policy.smtp_password_file:
        with contextlib.suppress(OSError):
            found.append(_read_secret_file(policy.smtp_password_file))
    return [s for s in found if s]


class Alerter:
    def __init__(self, policy: AlertPolicy) -> None:
        self.policy = policy

    def send(self, alert: Alert) -> int:
        """Deliver through every configured channel; returns how many succeeded."""
        if not self.policy.configured:
            log.warning(
                "no alert channel is configured (schedule.toml [alerts]): %s", alert.subject
            )
            return 0
        # Imported when an alert goes out: ssl, smtplib and email are 6 MiB resident, and every
        # command loads this module (a restore's peak memory is measured against restic's).
        import smtplib

        delivered = 0
        for name, channel in (
            ("command", self._command),
            ("webhook", self._webhook),
            ("e-mail", self._email),
        ):
            try:
                if channel(alert):
                    delivered += 1
            except (OSError, smtplib.SMTPException, subprocess.SubprocessError, ValueError) as exc:
                # The exception text can hold the webhook URL or SMTP server replies: class only.
                log.error("alert by %s failed: %s", name, _failure(exc))
        return delivered

    def _command(self, alert: Alert) -> bool:
        if not self.policy.command:
            return False
        completed = subprocess.run(
            shlex.split(self.policy.command),
            input=json.dumps(asdict(alert)).encode(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=HOOK_TIMEOUT_SECONDS,
            check=False,
            env={
                "PATH": "/usr/local/bin:/usr/bin:/bin",
                "VAULT_ALERT_JOB": alert.job,
                "VAULT_ALERT_KIND": alert.kind,
                "VAULT_ALERT_SUBJECT": alert.subject,
            },
        )
        if completed.returncode != 0:
            log.error("alert command exited with %d", completed.returncode)
            return False
        return True

    def _webhook(self, alert: Alert) -> bool:
        if not self.policy.webhook_url:
            return False
        import urllib.request

        payload = asdict(alert) | {"text": alert.text()}
        request = urllib.request.Request(
            self.policy.webhook_url,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json", "User-Agent": "vault"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=NETWORK_TIMEOUT_SECONDS) as response:
            return bool(200 <= response.status < 300)

    def _email(self, alert: Alert) -> bool:
        p = self.policy
        if not p.email_to:
            return False
        if not p.smtp_host:
            raise ValueError("email_to is set but smtp_host is not")
        import smtplib
        import ssl
        from email.message import EmailMessage

        message = EmailMessage()
        message["Subject"] = alert.subject
        message["From"] = p.email_from or f"vault@{alert.host}"
        message["To"] = ", ".join(p.email_to)
        message.set_content(alert.text())
        if p.smtp_user and not p.smtp_starttls and not _is_loopback(p.smtp_host):
            raise ValueError("smtp_starttls = false would send the SMTP password in the clear")
        with smtplib.SMTP(p.smtp_host, p.smtp_port, timeout=NETWORK_TIMEOUT_SECONDS) as smtp:
            if p.smtp_starttls:
                # Certificate and host name verified: the password and the alert go only to
                # the server named in smtp_host, never to whoever sits in between.
                smtp.starttls(context=ssl.create_default_context(cafile=p.smtp_ca_file or None))
            if p.smtp_user:
                smtp.login(p.smtp_user, _read_secret_file(p.smtp_password_file))
            smtp.send_message(message)
        return True


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _failure(exc: BaseException) -> str:
    """Why a channel failed, without its text (which can hold the webhook URL or replies)."""
    import ssl

    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            "the server's certificate did not verify (wrong host name, or a private CA that "
            "needs smtp_ca_file); nothing was sent"
        )
    if isinstance(exc, ValueError) and "in the clear" in str(exc):
        return str(exc)
    return type(exc).__name__
