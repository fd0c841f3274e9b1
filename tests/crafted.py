"""Snapshots crafted with a repository's own keys, as an attacker holding a stolen key file
could write them: raw tree JSON, sealed and packed like any other, bypassing every check vault
applies when it writes a tree itself."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vault import ids
from vault.format.pack import BlobType
from vault.format.snapshot import Snapshot
from vault.repo.repository import Repository
from vault.repo.writer import BlobWriter


class Crafter:
    """Writes raw trees and file contents into an opened repository."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.writer = BlobWriter(repo)

    def file(
        self, name: bytes | str, content: bytes, mode: int = 0o644, **extra: Any
    ) -> dict[str, Any]:
        chunks = [self.writer.add(BlobType.DATA, content).hex()] if content else []
        return {
            **_name(name),
            "type": "file",
            "mode": mode,
            "uid": os.getuid(),
            "gid": os.getgid(),
            "mtime_ns": 1_700_000_000_000_000_000,
            "size": len(content),
            "inode": 0,
            "ctime_ns": 0,
            "chunks": chunks,
            "sha256": hashlib.sha256(content).hexdigest(),
            **extra,
        }

    def symlink(self, name: bytes | str, target: bytes | str) -> dict[str, Any]:
        link = target if isinstance(target, str) else target.decode()
        return {
            **_name(name),
            "type": "symlink",
            "mode": 0o777,
            "uid": os.getuid(),
            "gid": os.getgid(),
            "mtime_ns": 1_700_000_000_000_000_000,
            "link_target": link,
        }

    def dir(
        self, name: bytes | str, nodes: list[dict[str, Any]], mode: int = 0o755, **extra: Any
    ) -> dict[str, Any]:
        return {
            **_name(name),
            "type": "dir",
            "mode": mode,
            "uid": os.getuid(),
            "gid": os.getgid(),
            "mtime_ns": 1_700_000_000_000_000_000,
            "subtree": self.tree(nodes),
            **extra,
        }

    def tree(self, nodes: list[dict[str, Any]]) -> str:
        """A tree blob holding exactly `nodes`, in the order given (duplicates and all)."""
        raw = json.dumps({"version": 1, "nodes": nodes}, separators=(",", ":")).encode()
        return self.writer.add(BlobType.TREE, raw).hex()

    def snapshot(self, nodes: list[dict[str, Any]], path: str = "/crafted") -> Snapshot:
        """A snapshot whose root tree holds `nodes` (the snapshot's paths say `path`)."""
        root = self.tree(nodes)
        self.writer.flush()
        self.writer.close()
        snap = Snapshot(
            id=ids.new_id(),
            time=datetime.now(UTC),
            host="attacker",
            username="attacker",
            paths=(path,),
            tree=root,
        )
        self.repo.save_snapshot(snap)
        self.writer = BlobWriter(self.repo)
        return snap


def _name(name: bytes | str) -> dict[str, str]:
    raw = name.encode() if isinstance(name, str) else name
    try:
        return {"name": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"name_b64": base64.b64encode(raw).decode()}


def sentinel_tree(root: Path) -> Path:
    """A small tree outside every restore target: what an attack would try to change."""
    (root / "dir").mkdir(parents=True)
    (root / "file").write_bytes(b"sentinel file")
    (root / "dir" / "inner").write_bytes(b"sentinel inner")
    (root / "file").chmod(0o640)
    (root / "dir").chmod(0o755)
    root.chmod(0o755)
    return root


def fingerprint(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under `root` (and `root` itself): type, mode, owner, size, mtime, content
    hash. Equal before and after means nothing there changed."""
    found: dict[str, tuple[object, ...]] = {}

    def entries() -> Iterator[Path]:
        yield root
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                yield Path(dirpath) / name

    for path in entries():
        st = path.lstat()
        digest = ""
        if path.is_file() and not path.is_symlink():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        found[str(path.relative_to(root))] = (
            st.st_mode,
            st.st_uid,
            st.st_gid,
            st.st_size,
            st.st_mtime_ns,
            st.st_nlink,
            digest,
        )
    return found
