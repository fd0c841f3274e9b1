"""What an S3 repository is configured with, and the pure helpers around it: the settings an
`s3://bucket/prefix?…` URL gives, the environment knobs for retries and timeouts, and reading a
ranged answer's length. No boto3 here (vault.storage.s3 is its one home)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from vault.errors import UsageError
from vault.units import whole_number

MAX_ATTEMPTS_ENV = "VAULT_S3_MAX_ATTEMPTS"
# How long a request may wait for the server's next byte before it is retried: long enough for
# a slow endpoint, short enough that a stalled connection does not hang a nightly job.
READ_TIMEOUT_ENV = "VAULT_S3_READ_TIMEOUT"


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    prefix: str = ""
    allow_insecure_http: bool = False
    storage_class: str | None = None
    sse: str | None = None  # "AES256" or "aws:kms" — in addition to vault's own encryption
    sse_kms_key_id: str | None = None
    addressing_style: str | None = None  # "path" | "virtual"; default: path for custom endpoints
    # This repository's own endpoint and AWS profile, over the environment's: two repositories
    # at two providers in one command (a replica offsite, `vault copy`).
    endpoint_url: str | None = None
    profile: str | None = None
    max_attempts: int = 0  # per request, inside botocore; 0: $VAULT_S3_MAX_ATTEMPTS or 8
    outer_attempts: int = 4  # whole operations whose body broke off, around botocore
    retry_base_seconds: float = 0.5
    connections: int = 16
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    @classmethod
    def from_url(cls, url: str, *, allow_insecure_http: bool = False) -> S3Settings:
        """s3://bucket/prefix?storage_class=STANDARD_IA&sse=AES256&addressing=path, and
        &endpoint=https://host:port&profile=NAME for a repository at another provider."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise UsageError(f"not an S3 repository URL: {url} (expected s3://bucket/prefix)")
        known = {"storage_class", "sse", "sse_kms_key_id", "addressing", "endpoint", "profile"}
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - known
        if unknown:
            raise UsageError(f"unknown S3 option {sorted(unknown)[0]!r} in the repository URL")
        if query.get("sse") not in (None, "AES256", "aws:kms"):
            raise UsageError("sse must be AES256 or aws:kms")
        if query.get("addressing") not in (None, "path", "virtual"):
            raise UsageError("addressing must be path or virtual")
        endpoint = query.get("endpoint")
        if endpoint is not None and not urlsplit(endpoint).netloc.strip():
            raise UsageError("endpoint must be a URL like https://s3.example.com:9000")
        if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
            raise UsageError("endpoint must start with https:// (or http:// on loopback)")
        return cls(
            bucket=parts.netloc,
            prefix=parts.path.strip("/"),
            allow_insecure_http=allow_insecure_http,
            storage_class=query.get("storage_class"),
            sse=query.get("sse"),
            sse_kms_key_id=query.get("sse_kms_key_id"),
            addressing_style=query.get("addressing"),
            endpoint_url=endpoint,
            profile=query.get("profile"),
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def attempts_from_env() -> int:
    value = whole_number(os.environ.get(MAX_ATTEMPTS_ENV, ""), 2)
    return value if value is not None and 1 <= value <= 50 else 8


def timeout_from_env() -> float:
    try:
        seconds = float(os.environ.get(READ_TIMEOUT_ENV, ""))
    except ValueError:
        return 0.0
    return seconds if 0 < seconds <= 3600 else 0.0


def range_length(content_range: str | None, content_length: int | None) -> int | None:
    """How many bytes the answer must hold: from "bytes first-last/size" when the server sent
    it (a server may ignore Range and answer 200 with the whole object: Content-Length then)."""
    if content_range:
        unit, _, spec = content_range.partition(" ")
        span = spec.split("/", 1)[0]
        first, _, last = span.partition("-")
        low, high = whole_number(first), whole_number(last)
        if unit == "bytes" and low is not None and high is not None:
            return high - low + 1
    return content_length
