"""Content-defined chunking of a stream with seeded FastCDC, in bounded memory.

FastCDC picks a cut point from the bytes since the previous cut only, so a stream can be cut
block by block: every chunk found in a block is final except the last, whose bytes are carried
into the next block. Memory is one block plus one maximum-size chunk, whatever the file size.
The gear table is keyed with a seed from the keyring, so cut points do not fingerprint content.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pyfastcdc import FastCDC


@dataclass(frozen=True)
class ChunkerParams:
    min_size: int = 512 * 1024
    # pyfastcdc's avg sets the mask after the minimum: measured mean ~0.76 MiB on random
    # data (docs/format.md, "Chunking"); powers of two keep the masks exact.
    avg_size: int = 512 * 1024
    max_size: int = 8 * 1024 * 1024
    normalization: int = 1

    def to_json(self) -> dict[str, object]:
        return {
            "algorithm": "fastcdc-2020",
            "min_size": self.min_size,
            "avg_size": self.avg_size,
            "max_size": self.max_size,
            "normalization": self.normalization,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> ChunkerParams:
        if data.get("algorithm") != "fastcdc-2020":
            raise ValueError(f"unknown chunker {data.get('algorithm')!r}")
        return cls(
            int(data["min_size"]),  # type: ignore[call-overload]
            int(data["avg_size"]),  # type: ignore[call-overload]
            int(data["max_size"]),  # type: ignore[call-overload]
            int(data["normalization"]),  # type: ignore[call-overload]
        )


READ_BLOCK = 2 * 1024 * 1024


class Chunker:
    def __init__(self, params: ChunkerParams, seed: int) -> None:
        self.params = params
        # pyfastcdc shifts the seed left by one in 64 bits, and 0 means "unseeded".
        self._cdc = FastCDC(
            params.avg_size,
            min_size=params.min_size,
            max_size=params.max_size,
            normalized_chunking=params.normalization,  # type: ignore[arg-type]
            seed=(seed % (1 << 63)) or 1,
        )

    def chunks(self, read: Callable[[int], bytes], block: int = READ_BLOCK) -> Iterator[bytes]:
        """Yield the chunks of the stream that `read(n)` returns until it returns b''."""
        carry = b""
        while True:
            data = read(block)
            buffer = carry + data if carry else data
            if not data:
                if buffer:
                    yield from (bytes(c.data) for c in self._cdc.cut_buf(buffer))
                return
            pieces = list(self._cdc.cut_buf(buffer))
            for piece in pieces[:-1]:
                yield bytes(piece.data)
            last = pieces[-1]
            carry = buffer[last.offset :]

    def cut(self, data: bytes) -> list[bytes]:
        return [bytes(c.data) for c in self._cdc.cut_buf(data)]
