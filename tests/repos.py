"""A repository under test, local or on the S3 server, with raw access for tampering."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vault.repo.keys import Secret
from vault.repo.repository import Repository
from vault.storage import Storage


@dataclass
class RepoHandle:
    url: str
    storage: Storage  # raw access to the stored objects, bypassing vault
    backend: str
    env: dict[str, str] = field(default_factory=dict)  # for vault subprocesses
    path: Path | None = None  # local repositories only

    def __str__(self) -> str:
        return self.url

    def open(self, password: str) -> Repository:
        return Repository.open(self.storage, Secret.from_passphrase(password))

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(info.key for info in self.storage.list(prefix))

    def size(self, key: str) -> int:
        return self.storage.stat(key).size

    def read(self, key: str) -> bytes:
        return self.storage.get(key)

    def write(self, key: str, data: bytes) -> None:
        self.storage.put(key, data)

    def flip(self, key: str, offset: int) -> None:
        data = bytearray(self.read(key))
        data[offset] ^= 0x01
        self.write(key, bytes(data))

    def largest(self, prefix: str) -> str:
        return max(self.storage.list(prefix), key=lambda info: info.size).key

    def all_objects(self) -> Iterator[tuple[str, bytes]]:
        for key in self.keys():
            yield key, self.read(key)
