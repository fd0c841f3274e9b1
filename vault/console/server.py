"""Running the console: its TLS certificate (given, or self-signed once and kept in the state
directory) and the uvicorn server. Access lines are not uvicorn's (they would carry query
strings): the guard logs the route's pattern, the status and the user instead."""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from vault.console.routes import PAGES
from vault.console.web import Console, build_app
from vault.errors import UsageError
from vault.format import crypto

CERT_FILE, KEY_FILE = "console-cert.pem", "console-key.pem"


@dataclass(frozen=True)
class Certificate:
    certfile: Path
    keyfile: Path
    fingerprint: str
    generated: bool  # made just now


def certificate(given_cert: str, given_key: str, state_dir: Path, host: str) -> Certificate:
    if given_cert or given_key:
        if not (given_cert and given_key):
            raise UsageError("console.toml: certificate and private_key go together")
        cert, key = Path(given_cert), Path(given_key)
        try:
            pem = cert.read_bytes()
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"cannot use the certificate {cert} with {key}: {exc}") from None
        return Certificate(cert, key, crypto.certificate_fingerprint(pem), False)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert, key = state_dir / CERT_FILE, state_dir / KEY_FILE
    generated = not (cert.exists() and key.exists())
    if generated:
        names = tuple(
            dict.fromkeys(
                [
                    host if host not in ("0.0.0.0", "::") else "localhost",
                    "localhost",
                    "127.0.0.1",
                    socket.gethostname(),
                ]
            )
        )
        cert_pem, key_pem = crypto.self_signed_certificate(names)
        for path, data, mode in ((key, key_pem, 0o600), (cert, cert_pem, 0o644)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
    return Certificate(cert, key, crypto.certificate_fingerprint(cert.read_bytes()), generated)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            self._ready()


def serve(
    console: Console, host: str, port: int, cert: Certificate, ready: Callable[[], None]
) -> None:
    config = uvicorn.Config(
        build_app(console, PAGES),
        host=host,
        port=port,
        ssl_certfile=str(cert.certfile),
        ssl_keyfile=str(cert.keyfile),
        log_level="warning",
        access_log=False,
        lifespan="off",
        server_header=False,
        timeout_graceful_shutdown=3,
    )
    server = _Server(config, ready)
    server.run()
    if not server.started:
        raise UsageError(f"the console could not listen on {host}:{port} (in use, or not allowed)")
