"""The console's pages: fleet, repository, snapshots and their trees, studies, restores and
their progress, drills, the evidence pack, the audit log, scheduled jobs, keys and users.

Each handler takes a `Ctx` and returns a response; the route table at the end names the least
role of each. Patient data (names, IDs, tree paths) never goes into a URL: searches are POSTed,
a study is named by its catalog id (a keyed MAC, vault.dicom.catalog), and a folder of a tree
by a session-scoped handle.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from starlette.responses import RedirectResponse, Response, StreamingResponse

from vault.console import actions
from vault.console.login import change_password, login_form, logout, sign_in
from vault.console.served import fleet_row
from vault.console.tasks import RUNNING
from vault.console.users import ADMIN, OPERATOR, ROLES, VIEWER
from vault.console.web import Ctx, NotFound, Page, Refused
from vault.errors import UsageError
from vault.evidence import drill_log, drill_report, pack_render
from vault.format.tree import DIR, FILE
from vault.jobs.studies import StudyFilter, parse_date
from vault.policy.files import load_schedule_policy
from vault.repo import audit, lock
from vault.units import human_bytes, human_seconds

PAGE_SIZE = 50


def _when(iso: str | None) -> str:
    return (iso or "")[:16].replace("T", " ") or "never"


def _ago(seconds: float | None) -> str:
    return "never" if seconds is None else f"{human_seconds(max(seconds, 0))} ago"


# -- the fleet ------------------------------------------------------------------------------


def fleet(ctx: Ctx) -> Response:
    now = datetime.now(UTC)
    rows = []
    for name in sorted(ctx.console.served):
        row = fleet_row(ctx.console.served[name], now)
        st = row.status
        rows.append(
            {
                "name": name,
                "level": row.level,
                "findings": [f for f in row.findings if f.level != "OK"],
                "last_backup": _ago(st.latest_age_seconds) if st else "unknown",
                "replicas": [
                    f"{r['location']}: {human_seconds(r['lag_seconds'])} behind"
                    + (" (last copy failed)" if r.get("failed_since") else "")
                    for r in st.replicas
                ]
                if st
                else [],
                "last_check": (
                    f"{_when((st.last_check or {}).get('time'))} "
                    f"{(st.last_check or {}).get('outcome', '')}"
                )
                if st
                else "unknown",
                "last_drill": (
                    f"{_when(st.last_drill['started'])} {st.last_drill['result']}"
                    if st and st.last_drill
                    else "never"
                ),
                "actions": sum(len(a["corrective_actions"]) for a in st.open_actions) if st else 0,
                "rotation": st.keys.rotation if st else "unknown",
            }
        )
    worst = next((lv for lv in ("FAIL", "WARN") if any(r["level"] == lv for r in rows)), "OK")
    return ctx.render("fleet.html", rows=rows, worst=worst, fingerprint=ctx.console.fingerprint)


# -- one repository -------------------------------------------------------------------------


def overview(ctx: Ctx) -> Response:
    served = ctx.served()
    st = served.status()
    snapshots = served.snapshots()
    page = max(int(ctx.query("page", "1") or 1) if ctx.query("page", "1").isdigit() else 1, 1)
    newest_first = list(reversed(snapshots))
    shown = newest_first[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    recent = snapshots[-30:]
    largest = max((s.stats.bytes for s in recent), default=0)
    unit, scale = ("GB", 1e9) if largest >= 1e9 else ("MB", 1e6)
    sizes = drill_report.bar_chart(
        f"Backup size ({unit}) of the last {len(recent)} snapshot(s)",
        [(s.time.strftime("%m-%d"), s.stats.bytes / scale, "#2f6fb0") for s in recent],
        None,
        unit,
    )
    added = drill_report.bar_chart(
        f"New data stored (MB) by each of the last {len(recent)} snapshot(s)",
        [(s.time.strftime("%m-%d"), s.stats.bytes_stored / 1e6, "#2e8b57") for s in recent],
        None,
        "MB",
    )
    return ctx.render(
        "repository.html",
        name=served.name,
        st=st,
        findings=st.findings,
        snapshots=shown,
        page=page,
        pages=max((len(snapshots) + PAGE_SIZE - 1) // PAGE_SIZE, 1),
        total=len(snapshots),
        charts=[sizes, added] if snapshots else [],
        human_bytes=human_bytes,
    )


def tree(ctx: Ctx) -> Response:
    served = ctx.served()
    snapshot = served.snapshot(ctx.param("snapshot"))
    session = ctx.session
    if snapshot is None or session is None:
        raise NotFound()
    at = ctx.query("at")
    if at:  # (repository, snapshot, path, tree id, the parent's handle)
        held = session.handles.get(at)
        if not held or held[0] != served.name or held[1] != snapshot.id:
            raise NotFound()
        path, tree_id, parent = held[2], held[3], held[4]
        here = at
    else:
        path, tree_id, parent = "/", snapshot.tree, ""
        here = session.handle((served.name, snapshot.id, path, tree_id, ""))
    with served.guard:
        repo = served.open()
        repo.load_index()
        nodes = sorted(repo.load_tree(tree_id).nodes, key=lambda n: (n.type != DIR, n.name))
        actions.record(
            repo,
            ctx.user.name if ctx.user else "",
            "tree-view",
            result="PASS",
            snapshot=snapshot.id,
            details={"entries": len(nodes)},
        )
    entries = []
    for node in nodes:
        child = path.rstrip("/") + "/" + node.display_name
        handle = (
            session.handle((served.name, snapshot.id, child, node.subtree, here))
            if node.type == DIR
            else ""
        )
        entries.append(
            {
                "name": node.display_name,
                "type": node.type,
                "size": node.size,
                "handle": handle,
                "file": node.type == FILE,
            }
        )
    return ctx.render(
        "tree.html",
        name=served.name,
        snapshot=snapshot,
        path=path,
        entries=entries,
        here=here,
        parent=parent,
        is_root=path == "/",
        human_bytes=human_bytes,
        restore_root=bool(ctx.console.policy.restore_root),
    )


def restore_folder(ctx: Ctx) -> Response:
    served = ctx.served()
    held = ctx.session.handles.get(ctx.field("at")) if ctx.session else None
    if not held or held[0] != served.name:
        raise UsageError("that folder is no longer known: open the snapshot's tree again")
    snapshot_id, path = held[1], held[2]
    target = actions.new_folder(ctx.console.policy.restore_root, ctx.field("folder"))
    includes = () if path == "/" else (path,)
    user = ctx.user.name if ctx.user else ""
    task = ctx.console.tasks.start(
        user,
        served.name,
        f"Restore a folder of snapshot {snapshot_id[:8]} into {target.name}",
        lambda progress: actions.restore_to_directory(
            served, user, snapshot_id, includes, [], target, progress
        ),
    )
    return RedirectResponse(f"/tasks/{task.id}", status_code=303)


# -- studies --------------------------------------------------------------------------------


def _filter(ctx: Ctx) -> StudyFilter:
    since = parse_date(ctx.field("since") or None, "from")
    until = parse_date(ctx.field("until") or None, "to")
    return StudyFilter(
        patient_id=ctx.field("patient_id") or None,
        name=ctx.field("name") or None,
        since=since,
        until=until,
        modality=ctx.field("modality").upper() or None,
    )


def studies(ctx: Ctx) -> Response:
    served = ctx.served()
    if ctx.request.method == "GET":
        return ctx.render("studies.html", name=served.name, found=None, more=0, asked={})
    query = _filter(ctx)
    found = actions.search_studies(served, ctx.user.name if ctx.user else "", query)
    return ctx.render(
        "studies.html",
        name=served.name,
        found=found.rows,
        more=found.more,
        asked=ctx.form,
        human_bytes=human_bytes,
    )


def study(ctx: Ctx) -> Response:
    served = ctx.served()
    row = actions.view_study(served, ctx.user.name if ctx.user else "", ctx.param("catalog_id"))
    if row is None:
        raise NotFound()
    snapshots = {s.id: s for s in served.snapshots()}
    holders = [snapshots[s] for s in reversed(row.snapshots) if s in snapshots]
    pacs = served.pacs()
    return ctx.render(
        "study.html",
        name=served.name,
        study=row.study,
        holders=holders,
        endpoints=sorted(pacs.endpoints) if pacs else [],
        restore_root=bool(ctx.console.policy.restore_root),
        human_bytes=human_bytes,
    )


def restore_study(ctx: Ctx) -> Response:
    served = ctx.served()
    catalog_id = ctx.param("catalog_id")
    snapshot = served.snapshot(ctx.field("snapshot"))
    if snapshot is None:
        raise UsageError("choose a snapshot that holds the study")
    user = ctx.user.name if ctx.user else ""
    with served.guard:
        study_now, file_sets = actions.study_in(served.open(), snapshot, catalog_id)
    if ctx.field("destination") == "pacs":
        pacs = served.pacs()
        endpoint = pacs.endpoints.get(ctx.field("endpoint")) if pacs else None
        if endpoint is None:
            raise UsageError("choose one of the PACS destinations the repository's pacs.toml names")
        task = ctx.console.tasks.start(
            user,
            served.name,
            f"Send study {catalog_id[:12]} into {endpoint.name}",
            lambda progress: actions.send_to_pacs(
                served, user, snapshot.id, catalog_id, endpoint, progress
            ),
        )
    else:
        target = actions.new_folder(ctx.console.policy.restore_root, ctx.field("folder"))
        includes = tuple(study_now.files) + tuple(file_sets)
        task = ctx.console.tasks.start(
            user,
            served.name,
            f"Restore study {catalog_id[:12]} into {target.name}",
            lambda progress: actions.restore_to_directory(
                served, user, snapshot.id, includes, [catalog_id], target, progress
            ),
        )
    return RedirectResponse(f"/tasks/{task.id}", status_code=303)


# -- tasks and their progress ---------------------------------------------------------------


def _task(ctx: Ctx) -> Any:
    task = ctx.console.tasks.get(ctx.param("task"))
    if task is None:
        raise NotFound()
    if ctx.user is None or (task.owner != ctx.user.name and not ctx.user.at_least(ADMIN)):
        raise Refused()
    return task


def task_page(ctx: Ctx) -> Response:
    task = _task(ctx)
    return ctx.render("task.html", task=task, state=task.snapshot(), running=task.state == RUNNING)


def tasks(ctx: Ctx) -> Response:
    mine = None if ctx.at_least(ADMIN) else (ctx.user.name if ctx.user else "")
    return ctx.render("tasks.html", tasks=ctx.console.tasks.of(mine))


async def task_events(ctx: Ctx) -> Response:
    task = await asyncio.to_thread(_task, ctx)
    board = ctx.console.tasks

    async def events() -> AsyncIterator[str]:
        seen = -1
        while True:
            seen = await asyncio.to_thread(board.wait, task, seen, 15.0)
            state = task.snapshot()
            yield f"event: progress\ndata: {json.dumps(state)}\n\n"
            if state["state"] != RUNNING:
                yield "event: end\ndata: {}\n\n"
                return

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"x-accel-buffering": "no"}
    )


# -- drills ---------------------------------------------------------------------------------


def _records(ctx: Ctx) -> list[dict[str, Any]]:
    served = ctx.served()
    with served.guard:
        return drill_log.merged(drill_log.history(served.open()))


def drills(ctx: Ctx) -> Response:
    served = ctx.served()
    records = _records(ctx)
    summary = drill_report.summary(records)
    shown = records[-20:]
    chart = drill_report.log_chart(
        "Slowest single-study restore of each drill against the RTO",
        [
            (
                r["drill_id"][:8],
                drill_report.single_rto(r) or 0.0,
                "#2e8b57" if r["result"] == "PASS" else "#c0392b",
            )
            for r in shown
            if drill_report.single_rto(r) is not None
        ],
        summary["single_study_rto_target_seconds"],
    )
    return ctx.render(
        "drills.html",
        name=served.name,
        records=list(reversed(records)),
        summary=summary,
        chart=chart if shown else "",
        human_seconds=human_seconds,
        human_bytes=human_bytes,
    )


def drill_page(ctx: Ctx) -> Response:
    served = ctx.served()
    wanted = ctx.param("drill_id")
    record = next((r for r in _records(ctx) if r["drill_id"] == wanted), None)
    if record is None:
        raise NotFound()
    return ctx.render(
        "drill.html",
        name=served.name,
        r=record,
        human_seconds=human_seconds,
        human_bytes=human_bytes,
        review=drill_report.review_summary(record),
    )


def start_drill(ctx: Ctx) -> Response:
    served = ctx.served()
    user = ctx.user.name if ctx.user else ""

    def work(progress: Any) -> None:
        drill_id = actions.run_sampled_drill(served, user, progress)
        progress.task.link = ("the drill's record", f"/r/{served.name}/drills/{drill_id}")

    task = ctx.console.tasks.start(user, served.name, "A sampled restore drill", work)
    return RedirectResponse(f"/tasks/{task.id}", status_code=303)


def drill_download(ctx: Ctx) -> Response:
    served = ctx.served()
    records = _records(ctx)
    actions.record_download(served, ctx.user.name if ctx.user else "", "drill-report")
    return _attachment(
        drill_report.as_html(records), f"vault-drills-{served.name}.html", "text/html"
    )


# -- evidence, audit, jobs ------------------------------------------------------------------


def evidence(ctx: Ctx) -> Response:
    served = ctx.served()
    pack = actions.evidence_pack(served)
    return ctx.render("evidence.html", name=served.name, pack=pack)


def evidence_download(ctx: Ctx) -> Response:
    served = ctx.served()
    kind = ctx.param("format")
    if kind not in ("html", "md"):
        raise NotFound()
    pack = actions.evidence_pack(served)
    actions.record_download(served, ctx.user.name if ctx.user else "", f"evidence-pack.{kind}")
    if kind == "html":
        return _attachment(
            pack_render.as_html(pack), f"vault-evidence-{served.name}.html", "text/html"
        )
    return _attachment(
        pack_render.as_markdown(pack), f"vault-evidence-{served.name}.md", "text/markdown"
    )


def _attachment(text: str, filename: str, media: str) -> Response:
    return Response(
        text,
        media_type=f"{media}; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


def audit_log(ctx: Ctx) -> Response:
    served = ctx.served()
    with served.guard:
        report = audit.read_log(served.open())
    events = list(reversed(report.events))
    page = int(ctx.query("page", "1")) if ctx.query("page", "1").isdigit() else 1
    page = max(page, 1)
    shown = events[(page - 1) * 100 : page * 100]
    return ctx.render(
        "audit.html",
        name=served.name,
        events=shown,
        page=page,
        pages=max((len(events) + 99) // 100, 1),
        problems=report.problems,
        total=len(events),
    )


JOB_ACTIONS = {
    "check": "weekly check (reads back part of the packs)",
    "drill": "restore drill",
    "forget": "forget by retention",
    "prune": "prune",
    "copy": "copy to a replica",
    "key-rotate": "key rotation",
}


def jobs(ctx: Ctx) -> Response:
    served = ctx.served()
    schedule = load_schedule_policy(served.policy_dir)[0]
    with served.guard:
        events = audit.read_log(served.open()).events
    last: dict[str, Any] = {}
    counts: Counter[str] = Counter()
    for event in events:
        if event.action in JOB_ACTIONS:
            last[event.action] = event
            counts[event.action] += 1
    snapshots = served.snapshots()
    planned = [
        ("nightly backup", f"every day at {schedule.backup_at}"),
        (
            "check",
            f"{schedule.check_day} at {schedule.check_at}, "
            f"{schedule.check_read_percent} % of the packs",
        ),
        ("restore drill", f"looked at every day at {schedule.drill_at} (due by drill.toml)"),
        ("key rotation", f"looked at every day at {schedule.keys_at}"),
        ("forget and prune", f"{schedule.maintenance_day} at {schedule.maintenance_at}"),
    ]
    if schedule.copy_to:
        planned.append(("copy to replicas", "after each nightly backup"))
    return ctx.render(
        "jobs.html",
        name=served.name,
        planned=planned,
        policy_dir=str(served.policy_dir or "built-in defaults"),
        last=[(JOB_ACTIONS[a], last.get(a), counts[a]) for a in JOB_ACTIONS],
        latest=snapshots[-1] if snapshots else None,
    )


# -- admin: keys, policies, users -----------------------------------------------------------


def keys(ctx: Ctx) -> Response:
    served = ctx.served()
    st = served.status()
    files = []
    if served.policy_dir and served.policy_dir.is_dir():
        for path in sorted(served.policy_dir.glob("*.toml")):
            try:
                files.append((path.name, path.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError):
                files.append((path.name, "(cannot be read)"))
    return ctx.render("keys.html", name=served.name, k=st.keys, files=files)


def rotate(ctx: Ctx) -> Response:
    from vault.jobs.rotate import rotate_epoch

    served = ctx.served()
    with served.guard:
        repo = served.open()
        with lock.Lock(repo.storage, repo.keyring, exclusive=True, operation="key-rotate"):
            new = rotate_epoch(repo)
        actions.record_quietly(
            repo,
            ctx.user.name if ctx.user else "",
            "key-rotate",
            result="PASS",
            details={"current_epoch": new.id},
        )
    return RedirectResponse(f"/r/{served.name}/keys", status_code=303)


def users(ctx: Ctx) -> Response:
    return ctx.render(
        "users.html",
        users=sorted(ctx.console.users.users().values(), key=lambda u: u.name),
        roles=ROLES,
        signins=ctx.console.signins.recent(50),
        created=None,
    )


def add_user(ctx: Ctx) -> Response:
    made = ctx.console.users.add(
        ctx.field("name"),
        ctx.field("role"),
        with_totp=ctx.field("role") != VIEWER or ctx.field("totp") == "on",
    )
    return ctx.render(
        "users.html",
        users=sorted(ctx.console.users.users().values(), key=lambda u: u.name),
        roles=ROLES,
        signins=ctx.console.signins.recent(50),
        created=made,
    )


def remove_user(ctx: Ctx) -> Response:
    name = ctx.param("name")
    if ctx.user is not None and name == ctx.user.name:
        raise UsageError("you cannot remove your own account while signed in with it")
    ctx.console.users.remove(name)
    ctx.console.sessions.end_user(name)
    return RedirectResponse("/admin/users", status_code=303)


def unlock_user(ctx: Ctx) -> Response:
    ctx.console.users.unlock(ctx.param("name"))
    return RedirectResponse("/admin/users", status_code=303)


def _unused(ctx: Ctx) -> Response:  # the progress stream's synchronous side: never called
    raise NotFound()


PAGES: list[Page] = [
    Page("/login", None, login_form),
    Page("/login", None, sign_in, ("POST",)),
    Page("/logout", VIEWER, logout, ("POST",)),
    Page("/password", VIEWER, change_password, ("GET", "POST")),
    Page("/", VIEWER, fleet),
    Page("/tasks", OPERATOR, tasks),
    Page("/tasks/{task}", OPERATOR, task_page),
    Page("/tasks/{task}/events", OPERATOR, _unused, touches=False, stream=task_events),
    Page("/r/{repo}", VIEWER, overview),
    Page("/r/{repo}/snapshots/{snapshot}/tree", OPERATOR, tree),
    Page("/r/{repo}/restore-folder", OPERATOR, restore_folder, ("POST",)),
    Page("/r/{repo}/studies", OPERATOR, studies, ("GET", "POST")),
    Page("/r/{repo}/studies/{catalog_id}", OPERATOR, study),
    Page("/r/{repo}/studies/{catalog_id}/restore", OPERATOR, restore_study, ("POST",)),
    Page("/r/{repo}/drills", VIEWER, drills),
    Page("/r/{repo}/drills", OPERATOR, start_drill, ("POST",)),
    Page("/r/{repo}/drills/report.html", VIEWER, drill_download),
    Page("/r/{repo}/drills/{drill_id}", VIEWER, drill_page),
    Page("/r/{repo}/evidence", VIEWER, evidence),
    Page("/r/{repo}/evidence.{format}", VIEWER, evidence_download),
    Page("/r/{repo}/audit", VIEWER, audit_log),
    Page("/r/{repo}/jobs", VIEWER, jobs),
    Page("/r/{repo}/keys", ADMIN, keys),
    Page("/r/{repo}/keys/rotate", ADMIN, rotate, ("POST",)),
    Page("/admin/users", ADMIN, users),
    Page("/admin/users", ADMIN, add_user, ("POST",)),
    Page("/admin/users/{name}/remove", ADMIN, remove_user, ("POST",)),
    Page("/admin/users/{name}/unlock", ADMIN, unlock_user, ("POST",)),
]
