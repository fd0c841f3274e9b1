"""Trees: one directory's entries, serialized as canonical JSON and stored as a tree blob.

Names are bytes on disk. A name that is valid UTF-8 is stored as "name"; any other is stored
as "name_b64" so it survives byte for byte. Hashes and chunk ids are lowercase hex.

A tree that a file system could not have produced does not decode: an unsafe name (empty, ".",
"..", or holding "/" or NUL), two entries of one name, a mode outside the permission bits, a
negative owner or size, a malformed id. Such a tree was crafted (or damaged), and what it would
make a restore do is never tried; `check` reports it as damage.
"""

from __future__ import annotations

import base64
import functools
import json
from dataclasses import dataclass, field
from typing import Any

from vault.format.paths import is_safe_name

FILE = "file"
DIR = "dir"
SYMLINK = "symlink"


@dataclass(frozen=True)
class Node:
    name: bytes
    type: str
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    size: int = 0
    # Change detection for the next run (never shown): skip re-reading when all match.
    inode: int = 0
    ctime_ns: int = 0
    chunks: tuple[str, ...] = ()
    sha256: str = ""
    subtree: str = ""
    link_target: bytes = b""
    # True when the file changed while it was read: never reused by the next run.
    unstable: bool = False

    @property
    def display_name(self) -> str:
        return self.name.decode("utf-8", "backslashreplace")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = _bytes_field("name", self.name)
        out.update(
            type=self.type, mode=self.mode, uid=self.uid, gid=self.gid, mtime_ns=self.mtime_ns
        )
        if self.type == FILE:
            out.update(
                size=self.size,
                inode=self.inode,
                ctime_ns=self.ctime_ns,
                chunks=list(self.chunks),
                sha256=self.sha256,
            )
            if self.unstable:
                out["unstable"] = True
        elif self.type == DIR:
            out["subtree"] = self.subtree
        elif self.type == SYMLINK:
            out.update(_bytes_field("link_target", self.link_target))
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Node:
        if data["type"] not in (FILE, DIR, SYMLINK):
            raise ValueError(f"unknown node type {data['type']!r}")
        node = cls(
            name=_read_bytes_field(data, "name"),
            type=str(data["type"]),
            mode=int(data["mode"]),
            uid=int(data["uid"]),
            gid=int(data["gid"]),
            mtime_ns=int(data["mtime_ns"]),
            size=int(data.get("size", 0)),
            inode=int(data.get("inode", 0)),
            ctime_ns=int(data.get("ctime_ns", 0)),
            chunks=tuple(str(c) for c in data.get("chunks", ())),
            sha256=str(data.get("sha256", "")),
            subtree=str(data.get("subtree", "")),
            link_target=_read_bytes_field(data, "link_target") if data["type"] == SYMLINK else b"",
            unstable=bool(data.get("unstable", False)),
        )
        node.validate()
        return node

    def validate(self) -> None:
        """ValueError unless this entry is one a file system could hold."""
        if not is_safe_name(self.name):
            raise ValueError(f"unsafe entry name {self.display_name!r}")
        if not 0 <= self.mode <= 0o7777:
            raise ValueError(f"{self.display_name!r}: mode {self.mode:o} is not permission bits")
        if min(self.uid, self.gid, self.size, self.mtime_ns + (1 << 62)) < 0:
            raise ValueError(f"{self.display_name!r}: negative owner, size or time")
        if self.type == DIR and not _is_hex_id(self.subtree):
            raise ValueError(f"{self.display_name!r}: malformed subtree id")
        if self.type == FILE and not (
            all(_is_hex_id(c) for c in self.chunks) and _is_hex_id(self.sha256)
        ):
            raise ValueError(f"{self.display_name!r}: malformed chunk id or hash")
        if self.type == SYMLINK and (not self.link_target or b"\0" in self.link_target):
            raise ValueError(f"{self.display_name!r}: empty or NUL-holding link target")


@dataclass(frozen=True)
class Tree:
    nodes: tuple[Node, ...] = field(default_factory=tuple)

    def to_bytes(self) -> bytes:
        ordered = sorted(self.nodes, key=lambda n: n.name)
        doc = {"version": 1, "nodes": [n.to_json() for n in ordered]}
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Tree:
        doc = json.loads(data)
        if doc.get("version") != 1:
            raise ValueError(f"unsupported tree version {doc.get('version')!r}")
        nodes = tuple(Node.from_json(n) for n in doc["nodes"])
        seen: set[bytes] = set()
        for node in nodes:
            if node.name in seen:
                raise ValueError(f"two entries named {node.display_name!r}")
            seen.add(node.name)
        return cls(nodes)

    @functools.cached_property
    def _by_name(self) -> dict[bytes, Node]:
        return {node.name: node for node in self.nodes}

    def get(self, name: bytes) -> Node | None:
        # A backup asks once per entry: a dict, not a scan (600-slice series directories).
        return self._by_name.get(name)


_HEX = frozenset("0123456789abcdef")


def _is_hex_id(text: str) -> bool:
    return len(text) == 64 and _HEX.issuperset(text)


def _bytes_field(key: str, value: bytes) -> dict[str, Any]:
    try:
        return {key: value.decode("utf-8")}
    except UnicodeDecodeError:
        return {key + "_b64": base64.b64encode(value).decode()}


def _read_bytes_field(data: dict[str, Any], key: str) -> bytes:
    if key in data:
        return str(data[key]).encode("utf-8")
    return base64.b64decode(data[key + "_b64"])
