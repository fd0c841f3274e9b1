"""The console's route table: every page, its methods and the least role that may reach it.
The guard (vault.console.web) refuses a page above a user's role before its handler runs;
the tests request every route here as every role."""

from __future__ import annotations

from starlette.responses import Response

from vault.console.login import change_password, login_form, logout, sign_in
from vault.console.pages_admin import add_user, keys, remove_user, rotate, unlock_user, users
from vault.console.pages_evidence import (
    audit_log,
    drill_download,
    drill_page,
    drills,
    evidence,
    evidence_download,
    jobs,
    start_drill,
)
from vault.console.pages_fleet import fleet, overview
from vault.console.pages_restore import (
    restore_folder,
    restore_study,
    studies,
    study,
    task_events,
    task_page,
    tasks,
    tree,
)
from vault.console.users import ADMIN, OPERATOR, VIEWER
from vault.console.web import Ctx, NotFound, Page


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
