"""What an auditor reads: drills (history, each record, the report, starting one), the
evidence pack (viewed and downloaded), the audit log, and the scheduled jobs' last runs."""

from __future__ import annotations

from collections import Counter
from typing import Any

from starlette.responses import RedirectResponse, Response

from vault.console import actions
from vault.console.web import Ctx, NotFound
from vault.evidence import drill_log, drill_report, pack_render
from vault.policy.files import load_schedule_policy
from vault.repo import audit
from vault.units import human_bytes, human_seconds, whole_number


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
    page = max(whole_number(ctx.query("page", "1"), 6) or 1, 1)
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
