"""Finding and restoring: a snapshot's tree, the studies search, a study's page, restores into
a new folder or a PACS, and the tasks that run them with their progress over server-sent
events.

Patient data never goes into a URL: searches are POSTed, a study is named by its catalog id
(random, kept across snapshots), and a folder of a tree by a session-scoped handle."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import RedirectResponse, Response, StreamingResponse

from vault.console import actions
from vault.console.tasks import RUNNING
from vault.console.users import ADMIN
from vault.console.web import Ctx, NotFound, Refused
from vault.errors import UsageError
from vault.format.paths import display
from vault.format.tree import DIR, FILE
from vault.jobs.studies import StudyFilter, parse_date
from vault.units import human_bytes


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
        # The handle keeps the path as the snapshot holds it (bytes that are not UTF-8 kept
        # by surrogateescape, as a restore's include takes them); the page shows its escapes.
        child = path.rstrip("/") + "/" + os.fsdecode(node.name)
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
        path=display(os.fsencode(path)),
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
    console = ctx.console
    token = ctx.session.token if ctx.session else None

    async def events() -> AsyncIterator[str]:
        seen = -1
        while True:
            seen = await asyncio.to_thread(board.wait, task, seen, 15.0)
            # Watching is not activity, and the stream outlives no session: signed out, idle
            # or removed, the next change ends it (the page then finds the sign-in form).
            if console.signed_in(token, touch=False)[0] is None:
                yield "event: signed-out\ndata: {}\n\n"
                return
            state = task.snapshot()
            yield f"event: progress\ndata: {json.dumps(state)}\n\n"
            if state["state"] != RUNNING:
                yield "event: end\ndata: {}\n\n"
                return

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"x-accel-buffering": "no"}
    )
