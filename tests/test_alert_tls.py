"""E-mail alerts go over STARTTLS with the server's certificate and host name verified, against
a real SMTP server (aiosmtpd) on loopback: a certificate from an untrusted CA, or one for another
host name, gets neither the SMTP password nor the alert."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.certs import PrivateCA, ServerCert
from tests.conftest import RunCli

SMTP_PASSWORD = "smtp-pa55word-for-tls"


@dataclass
class Mailbox:
    messages: list[str] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content.decode())
        return "250 queued"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def ca(tmp_path: Path) -> PrivateCA:
    return PrivateCA(tmp_path / "pki")


def _serve(cert: ServerCert) -> tuple[Controller, Mailbox, int]:
    mailbox = Mailbox()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert.cert, cert.key)
    port = _free_port()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=mailbox.authenticate,
        auth_required=True,
    )
    controller.start()
    return controller, mailbox, port


@pytest.fixture
def server(request: pytest.FixtureRequest, ca: PrivateCA) -> Iterator[tuple[Mailbox, int]]:
    hosts = request.param
    controller, mailbox, port = _serve(ca.issue("smtp", hosts))
    try:
        yield mailbox, port
    finally:
        controller.stop()


def _policies(tmp_path: Path, port: int, ca_file: Path | None) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir(exist_ok=True)
    secret = tmp_path / "smtp-password"
    secret.write_text(SMTP_PASSWORD + "\n")
    secret.chmod(0o600)
    (directory / "schedule.toml").write_text(
        "[alerts]\n"
        'email_to = ["it@practice.example"]\n'
        f'smtp_host = "127.0.0.1"\nsmtp_port = {port}\n'
        'smtp_user = "vault"\n'
        f"smtp_password_file = {json.dumps(str(secret))}\n"
        + (f"smtp_ca_file = {json.dumps(str(ca_file))}\n" if ca_file else "")
    )
    return directory


@pytest.mark.parametrize("server", [["127.0.0.1"]], indirect=True)
def test_an_alert_reaches_a_server_whose_certificate_verifies(
    server: tuple[Mailbox, int], ca: PrivateCA, tmp_path: Path, vault: RunCli
) -> None:
    mailbox, port = server
    done = vault("schedule", "alert-test", "--policy-dir", _policies(tmp_path, port, ca.pem))
    assert done.code == 0, done.err
    assert mailbox.logins == [("vault", SMTP_PASSWORD)]
    assert len(mailbox.messages) == 1 and "test" in mailbox.messages[0].lower()


@pytest.mark.parametrize("server", [["127.0.0.1"]], indirect=True)
def test_a_certificate_from_an_untrusted_ca_gets_neither_password_nor_alert(
    server: tuple[Mailbox, int], tmp_path: Path, vault: RunCli
) -> None:
    mailbox, port = server
    done = vault("schedule", "alert-test", "--policy-dir", _policies(tmp_path, port, None))
    assert done.code != 0
    assert "certificate did not verify" in done.err
    assert mailbox.logins == [] and mailbox.messages == []
    assert SMTP_PASSWORD not in done.out + done.err


@pytest.mark.parametrize("server", [["mail.practice.example"]], indirect=True)
def test_a_certificate_for_another_host_name_gets_neither_password_nor_alert(
    server: tuple[Mailbox, int], ca: PrivateCA, tmp_path: Path, vault: RunCli
) -> None:
    mailbox, port = server
    done = vault("schedule", "alert-test", "--policy-dir", _policies(tmp_path, port, ca.pem))
    assert done.code != 0
    assert "certificate did not verify" in done.err
    assert mailbox.logins == [] and mailbox.messages == []


def test_a_login_without_starttls_to_another_host_is_refused(
    tmp_path: Path, vault: RunCli
) -> None:
    policies = _policies(tmp_path, 25, None)
    text = (policies / "schedule.toml").read_text()
    (policies / "schedule.toml").write_text(
        text.replace('smtp_host = "127.0.0.1"', 'smtp_host = "192.0.2.1"')
        + "smtp_starttls = false\n"
    )
    done = vault("schedule", "alert-test", "--policy-dir", policies)
    assert done.code != 0
    assert "would send the SMTP password in the clear" in done.err
