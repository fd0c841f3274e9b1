"""Long work started from a page (a restore, a send into a PACS, a drill) runs in a thread of
the server; its page follows it over server-sent events. A task is its owner's: another user
sees it only as an admin. Finished tasks are kept for an hour, then forgotten."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vault.errors import VaultError

log = logging.getLogger("vault.console")
KEEP_SECONDS = 3600
RUNNING, DONE, FAILED = "running", "done", "failed"


@dataclass
class Task:
    id: str
    owner: str
    repository: str
    title: str
    started: float
    state: str = RUNNING
    label: str = "starting"
    done: int = 0
    total: int | None = None
    unit: str = "B"
    lines: list[str] = field(default_factory=list)  # what it came to, for the page
    link: tuple[str, str] | None = None  # (text, path) of a page about the result
    finished: float = 0.0
    version: int = 0  # bumped on every change, so the event stream sends only news

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "label": self.label,
            "done": self.done,
            "total": self.total,
            "unit": self.unit,
            "lines": list(self.lines),
            "link": list(self.link) if self.link else None,
            "seconds": round((self.finished or time.time()) - self.started, 1),
        }


class TaskProgress:
    """vault.progress.Progress into a task (the jobs report through it as to a terminal)."""

    def __init__(self, task: Task, changed: threading.Condition) -> None:
        self.task = task
        self._changed = changed

    def _bump(self, **changes: Any) -> None:
        with self._changed:
            for key, value in changes.items():
                setattr(self.task, key, value)
            self.task.version += 1
            self._changed.notify_all()

    def start(self, label: str, total: int | None, unit: str = "B") -> None:
        self._bump(label=label, total=total, done=0, unit=unit)

    def advance(self, amount: int) -> None:
        self._bump(done=self.task.done + amount)

    def set_total(self, total: int) -> None:
        self._bump(total=total)

    def finish(self) -> None:
        if self.task.total is not None:
            self._bump(done=self.task.total)

    def say(self, line: str) -> None:
        self._bump(lines=[*self.task.lines, line])


Work = Callable[[TaskProgress], None]


class Tasks:
    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}
        self.changed = threading.Condition()

    def start(self, owner: str, repository: str, title: str, work: Work) -> Task:
        task = Task(secrets.token_urlsafe(12), owner, repository, title, time.time())
        self._forget_old()
        self._tasks[task.id] = task
        progress = TaskProgress(task, self.changed)

        def run() -> None:
            state = DONE
            try:
                work(progress)
            except VaultError as exc:
                progress.say(f"error: {exc}")
                state = FAILED
            except Exception as exc:  # the page says what kind; the log, no more (no PHI)
                log.error("task %s failed: %s", task.id, exc.__class__.__name__)
                progress.say(f"internal error: {exc.__class__.__name__}")
                state = FAILED
            progress._bump(state=state, finished=time.time())

        threading.Thread(target=run, name=f"console-task-{task.id}", daemon=True).start()
        return task

    def get(self, task_id: str) -> Task | None:
        return self._tasks.get(task_id)

    def of(self, owner: str | None) -> list[Task]:
        found = [t for t in self._tasks.values() if owner is None or t.owner == owner]
        return sorted(found, key=lambda t: -t.started)

    def wait(self, task: Task, seen: int, timeout: float) -> int:
        """Block until `task` changed after version `seen`, or `timeout`; its version now."""
        with self.changed:
            self.changed.wait_for(lambda: task.version != seen, timeout=timeout)
            return task.version

    def _forget_old(self) -> None:
        now = time.time()
        for key in [
            k for k, t in self._tasks.items() if t.finished and now - t.finished > KEEP_SECONDS
        ]:
            del self._tasks[key]
