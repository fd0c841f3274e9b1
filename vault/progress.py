"""The progress interface jobs report through; the command line draws it, tests ignore it."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, label: str, total: int | None, unit: str = "B") -> None: ...
    def advance(self, amount: int) -> None: ...
    def set_total(self, total: int) -> None: ...
    def finish(self) -> None: ...


class NoProgress:
    """Progress that shows nothing (non-terminals, --json, tests)."""

    def start(self, label: str, total: int | None, unit: str = "B") -> None:
        pass

    def advance(self, amount: int) -> None:
        pass

    def set_total(self, total: int) -> None:
        pass

    def finish(self) -> None:
        pass
