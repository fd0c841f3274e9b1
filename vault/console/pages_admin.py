"""The admin's pages: key status, a new data-key epoch, the policy files, and console users."""

from __future__ import annotations

from starlette.responses import RedirectResponse, Response

from vault.console import actions
from vault.console.users import ROLES, VIEWER, NewUser
from vault.console.web import Ctx
from vault.errors import UsageError
from vault.repo import lock


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
    return _users_page(ctx, None)


def _users_page(ctx: Ctx, created: NewUser | None) -> Response:
    return ctx.render(
        "users.html",
        users=sorted(ctx.console.users.users().values(), key=lambda u: u.name),
        roles=ROLES,
        signins=ctx.console.signins.recent(50),
        created=created,
    )


def _account_changed(ctx: Ctx, outcome: str, detail: str) -> None:
    """An account change in the console's log, naming the admin who made it."""
    assert ctx.user is not None
    address = ctx.request.client.host if ctx.request.client else "?"
    ctx.console.signins.add(ctx.user.name, address, outcome, detail)


def add_user(ctx: Ctx) -> Response:
    made = ctx.console.users.add(
        ctx.field("name"),
        ctx.field("role"),
        with_totp=ctx.field("role") != VIEWER or ctx.field("totp") == "on",
    )
    _account_changed(ctx, "USER-ADDED", f"{made.user.name} as {made.user.role}")
    return _users_page(ctx, made)


def remove_user(ctx: Ctx) -> Response:
    name = ctx.param("name")
    if ctx.user is not None and name == ctx.user.name:
        raise UsageError("you cannot remove your own account while signed in with it")
    ctx.console.users.remove(name)
    ctx.console.sessions.end_user(name)
    _account_changed(ctx, "USER-REMOVED", name)
    return RedirectResponse("/admin/users", status_code=303)


def unlock_user(ctx: Ctx) -> Response:
    ctx.console.users.unlock(ctx.param("name"))
    _account_changed(ctx, "USER-UNLOCKED", ctx.param("name"))
    return RedirectResponse("/admin/users", status_code=303)
