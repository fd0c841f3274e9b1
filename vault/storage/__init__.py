"""Storage backends: a small interface (base) and its implementations; no encryption here."""

from vault.storage.base import ObjectInfo, Storage
from vault.storage.local import LocalStorage
from vault.storage.memory import MemoryStorage

__all__ = ["LocalStorage", "MemoryStorage", "ObjectInfo", "Storage", "open_storage"]


def open_storage(url: str) -> Storage:
    """The backend for a repository URL: a plain path or file:// path is a local directory."""
    from vault.errors import UsageError

    if url.startswith("s3://"):
        raise UsageError(f"S3 repositories ({url}) are not supported by this build yet")
    if "://" in url and not url.startswith("file://"):
        raise UsageError(f"unsupported repository URL scheme in {url}")
    path = url[len("file://") :] if url.startswith("file://") else url
    return LocalStorage(path)
