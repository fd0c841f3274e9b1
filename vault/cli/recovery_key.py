"""Where a new recovery key goes: a terminal, or a 0600 file the operator named; never JSON.

`init` and `key rotate --master` make a recovery key that opens the repository on its own. JSON
output ends up in scripts' logs and monitoring systems, so the key is never part of it: with
`--recovery-key-file FILE` it is written to FILE (created new, mode 0600, before the repository
is touched, so a bad path fails first); otherwise text output shows it, and `--json` shows it on
stderr only when stderr is a terminal (a person is there to copy it), else refuses to start.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
from pathlib import Path
from typing import TextIO

from vault.errors import UsageError

OPTION_HELP = (
    "write the new recovery key to FILE (created, mode 0600) instead of showing it; needed "
    "with --json when no terminal is attached"
)


class RecoveryKeyOutput:
    """Opened before the key exists; `deliver` once it does, `abandon` if it never will."""

    def __init__(self, args: argparse.Namespace, *, json_output: bool) -> None:
        self.path: Path | None = None
        self.stream: TextIO | None = None
        self._fd = -1
        named = getattr(args, "recovery_key_file", None)
        if named:
            self.path = Path(named)
            try:
                self._fd = os.open(
                    self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600
                )
            except FileExistsError:
                raise UsageError(
                    f"{self.path} exists; the recovery key goes to a new file"
                ) from None
            except OSError as exc:
                raise UsageError(f"cannot create {self.path}: {exc.strerror or exc}") from None
        elif not json_output:
            self.stream = sys.stdout
        elif sys.stderr.isatty():
            self.stream = sys.stderr
        else:
            raise UsageError(
                "the recovery key is never put in --json output (it would end up in logs): "
                "pass --recovery-key-file FILE, or run without --json on a terminal"
            )

    def deliver(self, key: str, heading: str) -> None:
        if self.path is not None:
            with os.fdopen(self._fd, "w", encoding="ascii") as handle:
                handle.write(key + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            self._fd = -1
            return
        assert self.stream is not None
        for line in (heading, "", f"    {key}", ""):
            print(line, file=self.stream)
        # Out of the process now: hours of work (a re-encryption) may follow, and a kill or a
        # power cut must not take the only copy with it. A redirect to a file is synced too.
        self.stream.flush()
        with contextlib.suppress(OSError, ValueError):
            if stat.S_ISREG(os.fstat(self.stream.fileno()).st_mode):
                os.fsync(self.stream.fileno())

    def abandon(self) -> None:
        """The key was never made: remove the empty file."""
        if self.path is not None and self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            with contextlib.suppress(OSError):
                self.path.unlink()
