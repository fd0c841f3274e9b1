"""Signing in and out, and changing one's password.

A sign-in takes the name, the password and (for operators and admins, and viewers enrolled)
the current TOTP code in one form, and answers every failure the same way, a locked account's
too, so the form does not tell which part was wrong or which names exist. Five failures lock
the account (console.toml); many failures from one address lock the address out for a while.
Each attempt goes to the sign-in log. The emergency-access (break-glass) account's sign-in is
recorded in every repository's audit log and keeps `vault status` at WARN until acknowledged;
a repository that cannot record it (its storage down: the morning break-glass is for) does not
stop the sign-in, which the console's own log holds either way.
"""

from __future__ import annotations

import logging

from starlette.responses import RedirectResponse, Response

from vault.console import actions
from vault.console.web import LOGIN_COOKIE, SESSION_COOKIE, Ctx, cookie_options, new_login_token
from vault.errors import VaultError
from vault.policy.passphrase import weakness

log = logging.getLogger("vault.console")
# One answer for every failure: a wrong name, password or code, or a locked account, so the
# form tells nobody which names exist or which are locked.
WRONG = (
    "The name, password or code is not right, or the account is locked after too many "
    "failed sign-ins. If this repeats, wait {minutes:g} minutes or ask an admin."
)


def _address(ctx: Ctx) -> str:
    return ctx.request.client.host if ctx.request.client else "?"


def login_form(ctx: Ctx, message: str = "", status_code: int = 200) -> Response:
    token = new_login_token()
    expired = ctx.query("expired") == "1" and not message
    response = ctx.render(
        "login.html",
        status_code=status_code,
        login_csrf=token,
        message=message
        or ("You were signed out after a time without activity." if expired else ""),
    )
    response.set_cookie(LOGIN_COOKIE, token, **cookie_options(600))
    return response


def sign_in(ctx: Ctx) -> Response:
    if not ctx.console.signing_in.acquire(blocking=False):
        return login_form(ctx, "The console is busy signing others in: try again in a moment.", 503)
    try:
        return _sign_in(ctx)
    finally:
        ctx.console.signing_in.release()


def _sign_in(ctx: Ctx) -> Response:
    console = ctx.console
    address = _address(ctx)
    name = ctx.field("name")
    # The sign-in log names an account only if it exists: a password typed into the name
    # field must not be written down.
    logged = name if console.users.get(name) is not None else "(unknown name)"
    mark = console.failures.attempt(address)
    if mark is None:
        console.signins.add(logged, address, "REFUSED", "too many failures from this address")
        return login_form(
            ctx, "Too many failed sign-ins from this address: wait a few minutes.", 429
        )
    policy = console.policy
    outcome = console.users.sign_in(
        name,
        ctx.form.get("password", ""),
        ctx.field("code"),
        max_failures=policy.max_failures,
        lockout_seconds=policy.lockout_minutes * 60,
    )
    console.signins.add(logged, address, outcome.outcome, outcome.detail)
    user = outcome.user
    if user is None:
        return login_form(ctx, WRONG.format(minutes=policy.lockout_minutes), 401)
    console.failures.passed(address, mark)
    if user.break_glass:
        for served in console.served.values():
            try:
                actions.record_break_glass_sign_in(served, user.name)
            except VaultError as exc:
                log.error(
                    "could not record the emergency sign-in in %s: %s",
                    served.name,
                    exc.__class__.__name__,
                )
    session = console.sessions.create(
        user.name, user.role, must_change=user.must_change, account=user.password.salt
    )
    response = RedirectResponse("/password" if user.must_change else "/", status_code=303)
    response.set_cookie(SESSION_COOKIE, session.token, **cookie_options())
    response.delete_cookie(LOGIN_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


def logout(ctx: Ctx) -> Response:
    if ctx.session is not None:
        ctx.console.sessions.end(ctx.session.token)
        ctx.console.signins.add(ctx.session.user, _address(ctx), "SIGN-OUT")
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


def change_password(ctx: Ctx) -> Response:
    assert ctx.user is not None and ctx.session is not None
    if ctx.request.method == "GET":
        return ctx.render("password.html", message="", first=ctx.session.must_change)
    current, new, again = (ctx.form.get(k, "") for k in ("current", "new", "again"))
    message = ""
    policy = ctx.console.policy
    if not ctx.console.users.check_password(
        ctx.user.name,
        current,
        max_failures=policy.max_failures,
        lockout_seconds=policy.lockout_minutes * 60,
    ):
        ctx.console.signins.add(ctx.user.name, _address(ctx), "FAIL", "wrong current password")
        message = "The current password is not right."
    elif new != again:
        message = "The two new passwords differ."
    elif new == current:
        message = "Choose a password other than the one-time one."
    else:
        message = weakness(new, (ctx.user.name, "vault", "console", "dental")) or ""
    if message:
        return ctx.render(
            "password.html", status_code=400, message=message, first=ctx.session.must_change
        )
    changed = ctx.console.users.set_password(ctx.user.name, new)
    ctx.session.must_change = False
    # This session goes on with the new password; the account's others, stamped with the old
    # one, end at their next request (Console.signed_in).
    ctx.session.account = changed.password.salt
    ctx.console.signins.add(ctx.user.name, _address(ctx), "PASSWORD-CHANGED")
    return RedirectResponse("/", status_code=303)
