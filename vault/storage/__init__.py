"""Storage backends: a small interface (base) and its implementations; no encryption here."""

from vault.errors import UsageError
from vault.storage.base import ObjectInfo, Retention, Storage
from vault.storage.counting import CountingStorage
from vault.storage.local import LocalStorage
from vault.storage.memory import MemoryStorage

__all__ = [
    "CountingStorage",
    "LocalStorage",
    "MemoryStorage",
    "ObjectInfo",
    "Retention",
    "Storage",
    "open_storage",
]


def open_storage(url: str, *, allow_insecure_http: bool = False) -> Storage:
    """The backend for a repository URL: s3://bucket/prefix is S3; a plain path or file:// path
    is a local directory."""
    if url.startswith("s3://"):
        # Imported here so that local-only use never pays boto3's import time (~0.3 s).
        from vault.storage.s3 import S3Storage
        from vault.storage.s3_settings import S3Settings

        return S3Storage(S3Settings.from_url(url, allow_insecure_http=allow_insecure_http))
    if "://" in url and not url.startswith("file://"):
        raise UsageError(f"unsupported repository URL scheme in {url}")
    path = url[len("file://") :] if url.startswith("file://") else url
    return LocalStorage(path)
