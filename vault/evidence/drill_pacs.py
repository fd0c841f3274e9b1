"""A drill's application check: the restored study sent into a standby PACS, then the PACS
asked (C-FIND at study, series and image level) whether it holds every instance.

A restore that verifies against SHA-256 proves the bytes; this proves the practice could read
the study from a PACS again. The record says how many studies, series and instances were
expected and found, by count and catalog id only, never a UID.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vault.pacs.connect import PacsError
from vault.pacs.find import Held, expected_from_files, held
from vault.pacs.store import Instance, read_instance, store
from vault.policy.pacs import PacsEndpoint


def check_in_pacs(
    endpoint: PacsEndpoint, root: Path, paths: Iterable[str], ref: str
) -> dict[str, Any]:
    started = time.monotonic()
    instances: list[Instance] = []
    skipped = 0  # files of the study that cannot go as stored (notes in `vault restore`)
    for number, path in enumerate(sorted(paths), start=1):
        staged = Path(os.fsdecode(os.fsencode(root) + os.fsencode(path)))
        found = read_instance(staged, f"{ref}/{number}")
        if isinstance(found, str):
            skipped += 1
        else:
            instances.append(found)
    entry: dict[str, Any] = {"endpoint": endpoint.name, "tls": endpoint.tls is not None,
                             "sent": len(instances), "skipped": skipped}  # fmt: skip
    problems: list[str] = []
    answers: list[Held] = []
    try:
        sent = store(endpoint, instances)
        entry.update(stored=len(sent.stored), failed=len(sent.failures))
        # One line per reason, not per instance (a CBCT has hundreds).
        reasons: dict[str, list[str]] = {}
        for label, why in sent.failures:
            reasons.setdefault(why, []).append(label)
        problems += [
            f"instance {labels[0]}: {why}"
            if len(labels) == 1
            else f"{len(labels)} instances (first {labels[0]}): {why}"
            for why, labels in reasons.items()
        ]
        if sent.stored:  # nothing went in: asking what it holds would only repeat why
            answers = [held(endpoint, e) for e in expected_from_files(i.path for i in instances)]
    except PacsError as exc:
        problems.append(str(exc))
    entry.update(
        studies_found=sum(a.study_found for a in answers),
        series_expected=sum(a.series_expected for a in answers),
        series_found=sum(a.series_found for a in answers),
        instances_expected=sum(a.instances_expected for a in answers) or len(instances),
        instances_found=sum(a.instances_found for a in answers),
        instances_extra=sum(a.instances_extra for a in answers),
        seconds=round(time.monotonic() - started, 3),
    )
    for a in answers:
        problems += a.problems
        if not a.complete:
            problems.append(
                f"the PACS holds {a.instances_found} of {a.instances_expected} instance(s) in "
                f"{a.series_found} of {a.series_expected} series"
                + ("" if a.study_found else ", and does not list the study")
            )
    if not instances:
        problems.append("the study has no DICOM instance a PACS could hold")
    entry["problems"] = problems
    entry["result"] = "FAIL" if problems else "PASS"
    return entry
