"""A loopback HTTP proxy in front of the S3 server that injects faults on demand.

Requests are forwarded unchanged (the Host header too, so SigV4 signatures stay valid). A test
queues faults; each fault applies to the next matching requests:

    proxy.inject(Fault("status", status=503, code="SlowDown"), times=3, method="PUT")
    proxy.inject(Fault("reset-mid-body"), times=1, method="GET")

Kinds: "status" (answer with an S3 error document, the request never reaches the server),
"reset" (close the connection without answering), "reset-mid-body" (forward, then send the
headers and half the body, then close), "truncate" (forward, then send the headers with the full
Content-Length but only half the body and end the response), "wrong-length" (forward, then
announce a Content-Length a third short of the body, send the whole body and close: a middlebox
that miscounts), "before" (call `before(path)` — say, delete the object for real — then
forward: an object that vanishes between a list and a get), "delay" (hold the request up to
`seconds`, or until `release()`, then forward). `down = True` refuses every request (the
server disappeared).

`shape(Link(...))` makes the proxy a wide-area link for benchmarks: every request waits one
round trip, and request and response bodies pass through shared up and down links of a fixed
rate, one transfer after another (`bytes_up`/`bytes_down` count what crossed them).

`strip_headers({"if-none-match"}, credentials)` makes the proxy a middlebox that drops those
request headers (so the server never sees a conditional write) and signs the request again with
the test credentials, so the server accepts it: a server that ignores If-None-Match, exactly.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.waiting import RequestChanges

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}


@dataclass(frozen=True)
class Fault:
    kind: str
    status: int = 500
    code: str = "InternalError"
    seconds: float = 0.0
    before: Callable[[str], None] | None = None


class Pipe:
    """One direction of a link: `rate` bytes a second, shared by every connection in turn
    (a transfer starts when the one before it has gone through)."""

    def __init__(self, bytes_per_second: float, closed: threading.Event) -> None:
        self.rate = bytes_per_second
        self._free_at = 0.0
        self._lock = threading.Lock()
        self._closed = closed  # set when the proxy closes: no transfer outlives it

    def carry(self, size: int) -> None:
        if self.rate <= 0 or size <= 0:
            return
        with self._lock:
            now = time.monotonic()
            self._free_at = max(now, self._free_at) + size / self.rate
            done = self._free_at
        # The time a real link would take, cut short when the proxy closes.
        self._closed.wait(max(0.0, done - time.monotonic()))


@dataclass(frozen=True)
class Link:
    """A practice's connection to a cloud region: a round trip per request, capped rates."""

    round_trip_seconds: float
    up_bytes_per_second: float  # 0: uncapped
    down_bytes_per_second: float

    def pipes(self, closed: threading.Event) -> tuple[Pipe, Pipe]:
        return Pipe(self.up_bytes_per_second, closed), Pipe(self.down_bytes_per_second, closed)


@dataclass
class _Rule:
    fault: Fault
    remaining: int
    method: str | None
    path_contains: str | None
    skip: int = 0  # matching requests let through before the fault starts


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client killed or timed out mid-request resets its connection: that is the
        faults being tested, not a proxy error worth a traceback on stderr."""


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self.down = False
        self._stripped: set[str] = set()
        self._signer: S3SigV4Auth | None = None
        self.headers_stripped = 0
        self.requests = 0
        self.faults_injected = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.arrived: list[tuple[str, str]] = []  # (method, path) of every request, as it came
        self._link: Link | None = None
        self._pipes: tuple[Pipe, Pipe] | None = None
        self.changes = RequestChanges()  # tests wait on this instead of sleeping
        # A "delay" holds its request until released or `seconds` passed, whichever is first;
        # close() releases every held request, so shutting down never waits on a stall.
        self._released = threading.Event()
        self._closed = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # The headers and the body go out in two writes: with Nagle's algorithm the body
            # then waits for the client's delayed ACK, 40 ms a response (S3 servers set it too).
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                try:
                    proxy._serve(self)
                finally:
                    proxy.changes.notify()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def inject(
        self,
        fault: Fault,
        *,
        times: int = 1,
        method: str | None = None,
        path_contains: str | None = None,
        after: int = 0,
    ) -> None:
        """Apply `fault` to `times` matching requests, after letting `after` of them pass."""
        with self._lock:
            self._rules.append(_Rule(fault, times, method, path_contains, after))

    def strip_headers(
        self, names: set[str], credentials: tuple[str, str], region: str = "us-east-1"
    ) -> None:
        self._stripped = {n.lower() for n in names}
        self._signer = S3SigV4Auth(Credentials(*credentials), "s3", region)

    def shape(self, link: Link | None) -> None:
        """Carry every later request over `link` (None: loopback again)."""
        self._link = link
        self._pipes = link.pipes(self._closed) if link else None

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            self.down = False

    def release(self) -> None:
        """End every stall now and let later "delay" faults pass at once."""
        self._released.set()

    def close(self) -> None:
        self._released.set()
        self._closed.set()
        self._server.shutdown()
        self._server.server_close()

    def _take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            self.requests += 1
            for rule in self._rules:
                if rule.remaining <= 0:
                    continue
                if rule.method and rule.method != method:
                    continue
                if rule.path_contains and rule.path_contains not in path:
                    continue
                if rule.skip > 0:
                    rule.skip -= 1
                    continue
                rule.remaining -= 1
                self.faults_injected += 1
                return rule.fault
        return None

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        with self._lock:
            self.arrived.append((handler.command, handler.path))
        self.changes.notify()  # a test may wait for a request to arrive, not only to end
        if self.down:
            _reset(handler)
            return
        fault = self._take(handler.command, handler.path)
        if fault is not None and fault.kind == "status":
            _error(handler, fault.status, fault.code)
            return
        if fault is not None and fault.kind == "reset":
            _reset(handler)
            return
        if fault is not None and fault.kind == "delay":
            self._released.wait(fault.seconds)
        if fault is not None and fault.kind == "before" and fault.before is not None:
            fault.before(handler.path)
        link, pipes = self._link, self._pipes
        if link is not None and pipes is not None:
            self._closed.wait(link.round_trip_seconds)  # the link's round trip
            pipes[0].carry(len(body))
        status, headers, payload = self._forward(handler, body)
        with self._lock:
            self.bytes_up += len(body)
            self.bytes_down += len(payload)
        if pipes is not None and handler.command != "HEAD":
            pipes[1].carry(len(payload))
        if fault is not None and fault.kind == "wrong-length" and payload:
            handler.send_response(status)
            for name, value in headers:
                if name.lower() != "content-length":
                    handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(payload) - max(1, len(payload) // 3)))
            handler.send_header("Connection", "close")
            handler.end_headers()
            handler.wfile.write(payload)
            handler.wfile.flush()
            handler.close_connection = True
            return
        if fault is not None and fault.kind in ("reset-mid-body", "truncate") and payload:
            handler.send_response(status)
            for name, value in headers:
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(payload[: len(payload) // 2])
            handler.wfile.flush()
            _reset(handler)
            return
        handler.send_response(status)
        for name, value in headers:
            handler.send_header(name, value)
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(payload)

    def _forward(
        self, handler: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            connection.putrequest(
                handler.command, handler.path, skip_host=True, skip_accept_encoding=True
            )
            for name, value in self._headers_to_send(handler, body):
                if name.lower() not in _HOP_BY_HOP:
                    connection.putheader(name, value)
            connection.endheaders(body)
            response = connection.getresponse()
            payload = response.read()
            headers = [(n, v) for n, v in response.getheaders() if n.lower() not in _HOP_BY_HOP]
            return response.status, headers, payload
        finally:
            connection.close()

    def _headers_to_send(
        self, handler: BaseHTTPRequestHandler, body: bytes
    ) -> list[tuple[str, str]]:
        headers = list(handler.headers.items())
        if not any(n.lower() in self._stripped for n, _ in headers) or self._signer is None:
            return headers
        with self._lock:
            self.headers_stripped += 1
        dropped = self._stripped | {"authorization", "x-amz-date"}
        request = AWSRequest(
            method=handler.command,
            url=f"http://{handler.headers['Host']}{handler.path}",
            data=body,
            headers={n: v for n, v in headers if n.lower() not in dropped},
        )
        self._signer.add_auth(request)
        return list(request.headers.items())


def _error(handler: BaseHTTPRequestHandler, status: int, code: str) -> None:
    document = (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>injected by the test proxy</Message></Error>"
    ).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/xml")
    handler.send_header("Content-Length", str(len(document)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(document)


def _reset(handler: BaseHTTPRequestHandler) -> None:
    """Close the client's connection abruptly (RST, not a clean FIN)."""
    handler.close_connection = True
    try:
        handler.connection.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
        )
        handler.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
