"""A file's content as a stream of verified blocks, in order: for a consumer that reads once
from start to end (a database dump loaded into a server), where a restore into a directory
would write the file to disk first.

Chunks are fetched a few ahead by a small pool, so the consumer rarely waits on storage;
each is authenticated (GCM), its keyed id recomputed, and the whole stream's SHA-256 compared
with the one recorded at backup before the stream ends without error.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from vault.errors import IntegrityError
from vault.format.pack import BlobType
from vault.format.tree import Node
from vault.repo.repository import Repository

AHEAD = 8  # chunks in flight: about 8 x 1 MiB held at most


def _chunk(repo: Repository, chunk_hex: str) -> bytes | bytearray:
    blob_id = bytes.fromhex(chunk_hex)
    location = repo.index.lookup(blob_id)
    if location is None or location.entry.type != BlobType.DATA:
        raise IntegrityError(f"chunk {chunk_hex[:16]} is not in the index")
    plain = repo.read_located(location)
    if repo.blob_id(plain, BlobType.DATA) != blob_id:
        raise IntegrityError(f"chunk {chunk_hex[:16]} does not match its id")
    return plain


def file_blocks(repo: Repository, node: Node, name: str) -> Iterator[bytes | bytearray]:
    """The verified chunks of the file `node` (called `name` in errors), in order. The last
    block is given only after the whole file's SHA-256 matched."""
    sha = hashlib.sha256()
    total = 0
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="content") as pool:
        pending: deque[Future[bytes | bytearray]] = deque()
        chunks = iter(node.chunks)
        try:
            for chunk_hex in chunks:
                pending.append(pool.submit(_chunk, repo, chunk_hex))
                if len(pending) >= AHEAD:
                    break
            held: bytes | bytearray | None = None
            while pending:
                block = pending.popleft().result()
                nxt = next(chunks, None)
                if nxt is not None:
                    pending.append(pool.submit(_chunk, repo, nxt))
                sha.update(block)
                total += len(block)
                if held is not None:
                    yield held
                held = block
        finally:
            for future in pending:
                future.cancel()
    if total != node.size or (node.sha256 and sha.hexdigest() != node.sha256):
        raise IntegrityError(f"{name} does not match the SHA-256 recorded at backup")
    if held is not None:
        yield held
