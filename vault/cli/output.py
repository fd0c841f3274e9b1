"""Terminal output for the command line: sizes, tables, JSON documents and tqdm progress.

The only home of tqdm. Progress appears only when stderr is a terminal and output is not JSON.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm


def emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=False) + "\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )
    return "\n".join(lines)


class TqdmProgress:
    """Progress drawn with tqdm on stderr."""

    def __init__(self) -> None:
        self._bar: tqdm[Any] | None = None

    def start(self, label: str, total: int | None, unit: str = "B") -> None:
        # Imported when a bar is drawn: tqdm is 7 MiB resident, and scripts, cron jobs and
        # --json runs never draw one.
        from tqdm import tqdm

        self.finish()
        self._bar = tqdm(
            total=total,
            desc=label,
            unit=unit,
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
        )

    def advance(self, amount: int) -> None:
        if self._bar is not None:
            self._bar.update(amount)

    def set_total(self, total: int) -> None:
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
