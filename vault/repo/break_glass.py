"""Break-glass opens: the recovery key used, or the console's emergency-access account signed
in. Each is an audit event and a pending entry that keeps `vault status` at WARN until
someone acknowledges it (`vault audit --acknowledge SEQ --note TEXT`)."""

from __future__ import annotations

from vault.repo import audit, jobstate
from vault.repo.repository import Repository


def record(
    repo: Repository,
    action: str,
    details: dict[str, str],
    *,
    actor: str | None = None,
    how: str = "",  # what `status` says happened ("" : the recovery key opened the repository)
) -> audit.AuditEvent:
    event = audit.record(repo, action, result="PASS", details=details, actor=actor)
    pending = (jobstate.load(repo, jobstate.BREAK_GLASS) or {}).get("pending", [])
    entry = {"event": event.seq, "time": event.time, "who": f"{event.actor}@{event.host}"}
    pending.append({**entry, "how": how} if how else entry)
    jobstate.save(repo, jobstate.BREAK_GLASS, {"pending": pending})
    return event
