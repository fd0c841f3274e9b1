"""The S3 backend (boto3), the only home of boto3 and botocore.

Endpoint, region, credentials, profile and CA bundle come from boto3's standard configuration
(AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, AWS_PROFILE, AWS_CA_BUNDLE, ~/.aws/config). Every SDK
error is translated here into vault.errors with one sentence that names the bucket and object and
never a credential. Plain-http endpoints are refused unless they are on loopback or the caller
allows them explicitly: patient data in transit must be protected (HIPAA 164.312(e)), and our
own encryption does not hide request patterns or protect credentials on the wire.

Reliability: botocore retries each request (adaptive mode: backoff plus client-side rate
limiting on SlowDown). Botocore cannot retry a response body that breaks off after the headers,
so whole-object operations get a second, outer retry here. Puts with if_absent use
If-None-Match: * where the server supports it and fall back to HEAD-then-PUT where it does not.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

import boto3
import botocore.exceptions as bex
from botocore.config import Config

from vault.errors import (
    ObjectExists,
    ObjectNotFound,
    RepositoryNotFound,
    StorageError,
    UsageError,
)
from vault.storage.base import (
    VERSIONS_KEPT,
    VERSIONS_NONE,
    VERSIONS_SUSPENDED,
    ObjectInfo,
    OldVersion,
    Retention,
)
from vault.storage.s3_settings import (
    S3Settings,
    attempts_from_env,
    is_loopback,
    range_length,
    timeout_from_env,
)

T = TypeVar("T")

MULTIPART_THRESHOLD = 64 * 1024 * 1024
PART_SIZE = 16 * 1024 * 1024

# Failures botocore does not retry because they happen after the response headers arrived: the
# body broke off or came short. Everything else (refused connections, 5xx, SlowDown) botocore
# has already retried `max_attempts` times with backoff; repeating that would only multiply
# the wait before a clear error.
_BROKEN_BODY = (
    bex.IncompleteReadError,
    bex.ResponseStreamingError,
    bex.ReadTimeoutError,
    bex.ConnectionClosedError,
)
_CONNECTION = (bex.ConnectionError, bex.ConnectTimeoutError, bex.ReadTimeoutError)


class S3Storage:
    def __init__(self, settings: S3Settings, *, client: Any = None) -> None:
        self.settings = settings
        self._prefix = settings.prefix + "/" if settings.prefix else ""
        self.http_requests: Counter[str] = Counter()
        self._counter_lock = threading.Lock()
        self._conditional_put = True  # until the server shows it ignores If-None-Match
        self._client = client or self._make_client()
        self._check_endpoint()

    # -- setup --------------------------------------------------------------------------------

    def _make_client(self) -> Any:
        s = self.settings
        try:
            session = boto3.session.Session(profile_name=s.profile)
            endpoint = s.endpoint_url or _configured_endpoint(session)
            style = s.addressing_style or ("path" if endpoint else "auto")
            attempts = s.max_attempts or attempts_from_env()
            config = Config(
                retries={"mode": "adaptive", "max_attempts": attempts},
                max_pool_connections=s.connections,
                connect_timeout=s.connect_timeout,
                read_timeout=timeout_from_env() or s.read_timeout,
                s3={"addressing_style": style},
                # Many S3-compatible servers reject the newer trailing-checksum uploads; every
                # byte we store is authenticated by AES-GCM anyway.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
            client = session.client("s3", config=config, endpoint_url=s.endpoint_url)
        except bex.ProfileNotFound as exc:
            raise UsageError(
                f"AWS profile {exc.kwargs.get('profile')!r} is not configured"
            ) from None
        except (bex.BotoCoreError, ValueError) as exc:
            raise UsageError(f"cannot configure the S3 client: {exc.__class__.__name__}") from None
        client.meta.events.register("before-send.s3", self._count_request)
        return client

    def _count_request(self, event_name: str = "", **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        with self._counter_lock:
            self.http_requests[operation] += 1

    def _check_endpoint(self) -> None:
        url = str(self._client.meta.endpoint_url)
        parts = urlsplit(url)
        if parts.scheme == "http" and not (
            is_loopback(parts.hostname or "") or self.settings.allow_insecure_http
        ):
            raise UsageError(
                f"refusing the plain-http endpoint {parts.scheme}://{parts.netloc}: S3 traffic "
                "must use TLS; use an https:// endpoint or pass --allow-insecure-http"
            )

    def location(self) -> str:
        return f"s3://{self.settings.bucket}/{self.settings.prefix}".rstrip("/")

    def local_root(self) -> str | None:
        return None

    def endpoint(self) -> str:
        parts = urlsplit(str(self._client.meta.endpoint_url))
        return f"{parts.scheme}://{parts.netloc}"

    # -- the Storage contract ---------------------------------------------------------------

    def _key(self, key: str) -> str:
        return self._prefix + key

    def put(
        self, key: str, data: bytes, *, if_absent: bool = False, retention: Retention | None = None
    ) -> None:
        extra: dict[str, Any] = {}
        if self.settings.storage_class:
            extra["StorageClass"] = self.settings.storage_class
        if self.settings.sse:
            extra["ServerSideEncryption"] = self.settings.sse
            if self.settings.sse_kms_key_id:
                extra["SSEKMSKeyId"] = self.settings.sse_kms_key_id
        if retention is not None:
            extra["ObjectLockMode"] = retention.mode
            extra["ObjectLockRetainUntilDate"] = retention.until
        if if_absent and not self._conditional_put:
            if self._exists(key):
                raise ObjectExists(key)
            if_absent = False
        if if_absent:
            extra["IfNoneMatch"] = "*"
        try:
            self._retry("write", key, lambda: self._upload(key, data, extra))
        except _Unsupported:
            # The server rejects conditional writes: check, then write (a small race remains,
            # harmless for vault's random ids; init checks again for the version object).
            self._conditional_put = False
            extra.pop("IfNoneMatch", None)
            if self._exists(key):
                raise ObjectExists(key) from None
            self._retry("write", key, lambda: self._upload(key, data, extra))

    def _upload(self, key: str, data: bytes, extra: dict[str, Any]) -> None:
        if len(data) < MULTIPART_THRESHOLD:
            self._client.put_object(
                Bucket=self.settings.bucket, Key=self._key(key), Body=data, **extra
            )
            return
        if_none_match = extra.pop("IfNoneMatch", None)
        upload = self._client.create_multipart_upload(
            Bucket=self.settings.bucket, Key=self._key(key), **extra
        )
        upload_id = upload["UploadId"]
        try:
            parts = []
            view = memoryview(data)
            for number, start in enumerate(range(0, len(data), PART_SIZE), start=1):
                part = self._client.upload_part(
                    Bucket=self.settings.bucket,
                    Key=self._key(key),
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=bytes(view[start : start + PART_SIZE]),
                )
                parts.append({"PartNumber": number, "ETag": part["ETag"]})
            complete: dict[str, Any] = {}
            if if_none_match:
                complete["IfNoneMatch"] = if_none_match
            self._client.complete_multipart_upload(
                Bucket=self.settings.bucket,
                Key=self._key(key),
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                **complete,
            )
        except BaseException:
            # On failure the bucket's lifecycle rule for incomplete uploads cleans up.
            with contextlib.suppress(bex.BotoCoreError, bex.ClientError):
                self._client.abort_multipart_upload(
                    Bucket=self.settings.bucket, Key=self._key(key), UploadId=upload_id
                )
            raise

    def get(self, key: str, *, offset: int = 0, length: int | None = None) -> bytes:
        args: dict[str, Any] = {"Bucket": self.settings.bucket, "Key": self._key(key)}
        if length is not None and length <= 0:
            return b""
        # Always a ranged GET, even for a whole object: the Content-Range answer states the
        # object's size independently of Content-Length, so a body cut short by a proxy that
        # miscounts is a transfer fault retried here, not "corrupt object" further up.
        end = "" if length is None else str(offset + length - 1)
        args["Range"] = f"bytes={offset}-{end}"

        def fetch() -> bytes:
            try:
                response = self._client.get_object(**args)
            except bex.ClientError as exc:
                if _code(exc) == "InvalidRange":
                    return b""  # a range past the end (or an empty object): nothing there
                raise
            body: bytes = response["Body"].read()
            expected = range_length(response.get("ContentRange"), response.get("ContentLength"))
            if expected is not None and len(body) != expected:
                raise bex.IncompleteReadError(actual_bytes=len(body), expected_bytes=expected)
            return body

        return self._retry("read", key, fetch)

    def _exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    def stat(self, key: str) -> ObjectInfo:
        head = self._retry(
            "read",
            key,
            lambda: self._client.head_object(Bucket=self.settings.bucket, Key=self._key(key)),
        )
        return ObjectInfo(key, int(head["ContentLength"]), head.get("ObjectLockRetainUntilDate"))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.settings.bucket, Prefix=self._key(prefix))
        iterator = iter(pages)
        while True:
            page = self._retry("list", prefix or "/", lambda: next(iterator, None))
            if page is None:
                return
            for item in page.get("Contents", ()):
                yield ObjectInfo(item["Key"][len(self._prefix) :], int(item["Size"]))

    def delete(self, key: str) -> None:
        self._retry(
            "delete",
            key,
            lambda: self._client.delete_object(Bucket=self.settings.bucket, Key=self._key(key)),
        )

    # -- object lock ------------------------------------------------------------------------

    def supports_object_lock(self) -> bool:
        def query() -> Any:
            return self._client.get_object_lock_configuration(Bucket=self.settings.bucket)

        try:
            config = self._retry("read", "the bucket's Object Lock configuration", query)
        except StorageError as exc:
            if "ObjectLockConfigurationNotFound" in str(exc):
                return False
            raise
        return bool(config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled")

    def extend_retention(self, key: str, retention: Retention) -> None:
        self._retry(
            "write",
            key,
            lambda: self._client.put_object_retention(
                Bucket=self.settings.bucket,
                Key=self._key(key),
                Retention={"Mode": retention.mode, "RetainUntilDate": retention.until},
            ),
        )

    # -- old versions (for an honest key erase) ---------------------------------------------

    def versioning(self) -> str:
        doc = self._retry(
            "read",
            "the bucket's versioning",
            lambda: self._client.get_bucket_versioning(Bucket=self.settings.bucket),
        )
        known = {"Enabled": VERSIONS_KEPT, "Suspended": VERSIONS_SUSPENDED}
        return known.get(doc.get("Status", ""), VERSIONS_NONE)

    def atomic_if_absent(self) -> bool:
        return self._conditional_put

    def capabilities(self) -> dict[str, str]:
        parts = urlsplit(str(self._client.meta.endpoint_url))
        transport = (
            f"TLS to {parts.netloc}, certificate verified"
            if parts.scheme == "https"
            else f"plain http to {parts.netloc} ("
            + ("loopback" if is_loopback(parts.hostname or "") else "allowed explicitly")
            + ")"
        )
        found = {"backend": "S3", "transport": transport}
        found["conditional writes"] = (
            "If-None-Match sent (whether the server enforces it is tested at the first append)"
            if self._conditional_put
            else "no: the server rejects If-None-Match, so vault checks, then writes"
        )
        try:
            found["versioning"] = self.versioning()
            found["object lock"] = "enabled" if self.supports_object_lock() else "not enabled"
        except StorageError as exc:
            found["versioning"] = found["object lock"] = f"unknown ({exc})"
        return found

    def old_versions(self, prefix: str = "") -> Iterator[OldVersion]:
        paginator = self._client.get_paginator("list_object_versions")
        pages = iter(paginator.paginate(Bucket=self.settings.bucket, Prefix=self._key(prefix)))
        while True:
            page = self._retry("list", prefix or "/", lambda: next(pages, None))
            if page is None:
                return
            for item in page.get("Versions", ()):
                if not item.get("IsLatest"):
                    yield OldVersion(
                        item["Key"][len(self._prefix) :], str(item["VersionId"]), int(item["Size"])
                    )

    def delete_version(self, key: str, version_id: str) -> None:
        self._retry(
            "delete",
            key,
            lambda: self._client.delete_object(
                Bucket=self.settings.bucket, Key=self._key(key), VersionId=version_id
            ),
        )

    # -- errors and retries -------------------------------------------------------------------

    def _retry(self, action: str, key: str, operation: Callable[[], T]) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                return operation()
            except bex.SSLError as exc:
                raise self._translate(exc, action, key, attempt) from None
            except _BROKEN_BODY as exc:
                if attempt >= self.settings.outer_attempts:
                    raise self._translate(exc, action, key, attempt) from None
            except (bex.ClientError, bex.BotoCoreError) as exc:
                raise self._translate(exc, action, key, attempt) from None
            time.sleep(self.settings.retry_base_seconds * (2 ** (attempt - 1)))

    def _translate(self, exc: Exception, action: str, key: str, attempts: int) -> Exception:
        where = (
            f"{self.location()}/{key}"
            if key and not key.startswith(("/", "the "))
            else (self.location() if key == "/" else f"{key} of s3://{self.settings.bucket}")
        )
        if isinstance(exc, bex.ClientError):
            code = _code(exc)
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                return RepositoryNotFound(
                    f"bucket {self.settings.bucket} does not exist at {self.endpoint()}"
                )
            if code in ("NoSuchKey", "404", "NotFound"):
                return ObjectNotFound(key)
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return ObjectExists(key)
            if code in ("NotImplemented", "501") and action == "write":
                return _Unsupported()
            if code in (
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "InvalidToken",
                "ExpiredToken",
                "InvalidClientTokenId",
                "AuthorizationHeaderMalformed",
            ):
                return StorageError(
                    f"{self.endpoint()} rejected the S3 credentials ({code}); check "
                    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the AWS profile"
                )
            if code in ("RequestTimeTooSkewed",):
                return StorageError(
                    f"{self.endpoint()} refused the request because this machine's clock is off "
                    "(RequestTimeTooSkewed); synchronize the clock (NTP) and try again"
                )
            if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled"):
                return StorageError(f"access denied to {where} ({action}); check the bucket policy")
            if code in ("SlowDown", "Throttling", "ThrottlingException", "503"):
                return StorageError(
                    f"{self.endpoint()} kept throttling requests ({code}) for {where}; gave up "
                    f"after {self._attempts(exc)} attempts"
                )
            if status and int(status) >= 500:
                return StorageError(
                    f"{self.endpoint()} failed to {action} {where}: server error {status} "
                    f"({code}) after {self._attempts(exc)} attempts"
                )
            return StorageError(f"S3 could not {action} {where}: {code} (HTTP {status})")
        if isinstance(exc, bex.SSLError):
            return StorageError(
                f"the TLS connection to {self.endpoint()} failed (untrusted certificate, or the "
                "endpoint does not speak TLS); for a private CA set AWS_CA_BUNDLE to its "
                "certificate file"
            )
        if isinstance(exc, _BROKEN_BODY):
            return StorageError(
                f"the connection to {self.endpoint()} broke while trying to {action} {where} "
                f"({exc.__class__.__name__}) after {attempts} attempts"
            )
        if isinstance(exc, _CONNECTION):
            return StorageError(
                f"cannot reach {self.endpoint()} (connection refused, reset or timed out) "
                f"while trying to {action} {where}"
            )
        if isinstance(exc, bex.NoCredentialsError | bex.PartialCredentialsError):
            return UsageError(
                "no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "or AWS_PROFILE"
            )
        return StorageError(f"S3 could not {action} {where}: {exc.__class__.__name__}")

    @staticmethod
    def _attempts(exc: bex.ClientError) -> int:
        return 1 + int(exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0))


class _Unsupported(Exception):
    """The server does not implement conditional writes."""


def _code(exc: bex.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _configured_endpoint(session: Any) -> str | None:
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(name):
            return os.environ[name]
    try:
        config = session._session.get_scoped_config()  # the profile's endpoint_url, if any
    except bex.BotoCoreError:
        return None
    value = config.get("endpoint_url") or (config.get("s3") or {}).get("endpoint_url")
    return str(value) if value else None
