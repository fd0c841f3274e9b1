"""The console's web layer: one route table naming each page's least role, the guard every
request passes (session, idle logoff, role, CSRF), security headers, and error pages that
carry no patient data. Handlers are plain functions of a `Ctx`, run in worker threads.

The route table is the single source of truth for access: a page without a role is public
(sign-in, static files), every other page is refused, before its handler runs, to anyone
below its role. The tests request every route as every role from this table.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vault.console.ratelimit import FailureWindow
from vault.console.served import Served
from vault.console.sessions import Session, Sessions
from vault.console.signins import SignInLog
from vault.console.tasks import Tasks
from vault.console.users import RANK, User, UserStore
from vault.errors import UsageError, VaultError
from vault.policy.console import ConsolePolicy
from vault.units import whole_number

log = logging.getLogger("vault.console")
SESSION_COOKIE = "vault_session"
LOGIN_COOKIE = "vault_login"  # the sign-in form's CSRF token (no session yet)

# No inline script or style anywhere: the pages load console.js and console.css only.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"strict-transport-security", b"max-age=31536000"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),  # "no-referrer" makes forms send Origin: null
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    (b"cache-control", b"no-store"),  # pages name patients: no copy stays in a cache
]


SIGN_INS_AT_ONCE = 4


@dataclass
class Console:
    policy: ConsolePolicy
    served: dict[str, Served]
    users: UserStore
    signins: SignInLog
    sessions: Sessions = field(init=False)
    failures: FailureWindow = field(init=False)
    tasks: Tasks = field(default_factory=Tasks)
    # Sign-ins checked or waiting at once. Each is an Argon2id derivation, one at a time in
    # the process: beyond these, a sign-in is answered "busy" at once instead of holding a
    # worker thread every page needs (a flood from many addresses would stall the console).
    signing_in: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(SIGN_INS_AT_ONCE)
    )
    templates: Environment = field(init=False)
    fingerprint: str = ""

    def __post_init__(self) -> None:
        self.sessions = Sessions(
            self.policy.idle_minutes * 60,
            on_idle=lambda s: self.signins.add(
                s.user, "", "IDLE-SIGN-OUT", "no request for the idle time"
            ),
        )
        self.failures = FailureWindow(
            self.policy.address_failures, self.policy.address_window_minutes * 60
        )
        self.templates = Environment(
            loader=PackageLoader("vault.console", "templates"),
            autoescape=select_autoescape(default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def signed_in(self, token: str | None, *, touch: bool) -> tuple[Session | None, User | None]:
        """The live session of `token` and its account, or (None, None). A session whose
        account is gone, or is another account by the same name, or whose password changed
        since (the command line can do either while the server runs), is ended here."""
        session = self.sessions.get(token, touch=touch)
        if session is None:
            return None, None
        user = self.users.get(session.user)
        if user is None or user.password.salt != session.account:
            self.sessions.end(session.token)
            return None, None
        return session, user


class NotFound(Exception):
    """A page asked for something that is not there (shown as 404, naming nothing)."""


class Refused(Exception):
    """Above this user's role, or not theirs (403)."""


@dataclass
class Ctx:
    request: Request
    console: Console
    session: Session | None
    user: User | None
    form: dict[str, str]

    def param(self, name: str) -> str:
        return str(self.request.path_params[name])

    def query(self, name: str, default: str = "") -> str:
        return self.request.query_params.get(name, default)

    def field(self, name: str) -> str:
        return self.form.get(name, "").strip()

    def served(self) -> Served:
        found = self.console.served.get(self.param("repo"))
        if found is None:
            raise NotFound()
        return found

    def at_least(self, role: str) -> bool:
        return self.user is not None and self.user.at_least(role)

    def render(self, template: str, status_code: int = 200, **values: Any) -> HTMLResponse:
        page = self.console.templates.get_template(template).render(
            user=self.user,
            csrf=self.session.csrf if self.session else "",
            repositories=sorted(self.console.served),
            idle_seconds=int(self.console.policy.idle_minutes * 60),
            at_least=self.at_least,
            svg=Markup,
            **values,
        )
        return HTMLResponse(page, status_code=status_code)


Handler = Callable[[Ctx], Response]


@dataclass(frozen=True)
class Page:
    path: str
    role: str | None  # the least role that may; None: public
    handler: Handler
    methods: tuple[str, ...] = ("GET",)
    touches: bool = True  # False for the progress stream: watching is not activity
    stream: Callable[[Ctx], Awaitable[Response]] | None = None


FORM_LIMIT = 64 * 1024


def _address(request: Request) -> str:
    return request.client.host if request.client else "?"


def _same_origin(request: Request) -> bool:
    """A state-changing request must come from our own pages, as its Origin says (browsers
    send it on every form post) or, without one, its Referer (our Referrer-Policy keeps it
    for our own origin); with neither, it is refused. The CSRF token is checked as well."""
    host = request.headers.get("host", "")
    origin = request.headers.get("origin")
    claimed = origin if origin is not None else request.headers.get("referer")
    if claimed is None or claimed == "null":
        return False
    try:
        return urlsplit(claimed).netloc == host
    except ValueError:  # "https://[abc": not a URL, and not ours
        return False


def guard(console: Console, page: Page) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        token = request.cookies.get(SESSION_COOKIE)
        session, user = console.signed_in(token, touch=page.touches)
        if page.role is not None:
            if session is None or user is None:
                where = "/login?expired=1" if token else "/login"
                return RedirectResponse(where, status_code=303)
            if session.must_change and page.path not in ("/password", "/logout"):
                return RedirectResponse("/password", status_code=303)
            if RANK[user.role] < RANK[page.role]:
                log.warning(
                    "refused %s %s to %s (%s)", request.method, page.path, user.name, user.role
                )
                console.signins.add(
                    user.name,
                    _address(request),
                    "DENIED",
                    f"{request.method} {page.path} needs {page.role}",
                )
                return _error(console, session, user, 403, "This page is above your role.")
        form: dict[str, str] = {}
        if request.method == "POST":
            if not _same_origin(request):
                return _error(
                    console, session, user, 403, "The request did not come from this console."
                )
            # The console's forms are a few fields: a body beyond FORM_LIMIT (or of no stated
            # length) is not one of them, and is refused before it is read into memory.
            length = whole_number(request.headers.get("content-length", ""), 9)
            if length is None or length > FORM_LIMIT:
                return _error(console, session, user, 413, "That form is larger than any of ours.")
            try:
                raw = await request.form()
                form = {k: v for k, v in raw.items() if isinstance(v, str)}
                for value in form.values():
                    value.encode()  # text that is not Unicode (a lone surrogate) is refused
            except Exception:  # a body no form of ours sends (odd charset, broken multipart)
                return _error(console, session, user, 400, "That form could not be read.")
            # The sign-in form's token is bound to its own cookie, even when the browser
            # still holds a session (signing in again over it).
            expected = (
                session.csrf
                if session is not None and page.role is not None
                else request.cookies.get(LOGIN_COOKIE, "")
            )
            given = form.get("csrf", "").encode()  # bytes: compare_digest refuses non-ASCII str
            if not expected or not hmac.compare_digest(given, expected.encode()):
                return _error(
                    console,
                    session,
                    user,
                    403,
                    "The form had expired or did not come from this console: reload the page "
                    "and try again.",
                )
        ctx = Ctx(request, console, session, user, form)
        try:
            if page.stream is not None:
                return await page.stream(ctx)
            response = await run_in_threadpool(page.handler, ctx)
        except NotFound:
            log.info("%s %s 404 %s", request.method, page.path, user.name if user else "-")
            return _error(console, session, user, 404, "There is nothing here.")
        except Refused:
            return _error(console, session, user, 403, "This is not yours to see.")
        except UsageError as exc:  # our own words: they name no patient
            return _error(console, session, user, 400, str(exc))
        except VaultError as exc:
            log.error("%s %s: %s", request.method, page.path, exc.__class__.__name__)
            return _error(
                console,
                session,
                user,
                500,
                f"The repository could not do this ({exc.__class__.__name__}). "
                "Run `vault check` on it, or see the server's log.",
            )
        except Exception as exc:
            # A bug. Its message and traceback could name a patient or a file: the class only,
            # and not re-raised (the server would log the traceback).
            log.error("%s %s: unexpected %s", request.method, page.path, exc.__class__.__name__)
            return _error(console, session, user, 500, "Something went wrong inside the console.")
        log.info(
            "%s %s %d %s",
            request.method,
            page.path,
            response.status_code,
            user.name if user else "-",
        )
        return response

    return endpoint


def _error(
    console: Console, session: Session | None, user: User | None, code: int, message: str
) -> HTMLResponse:
    page = console.templates.get_template("error.html").render(
        user=user,
        csrf=session.csrf if session else "",
        repositories=sorted(console.served),
        idle_seconds=int(console.policy.idle_minutes * 60),
        at_least=lambda role: user is not None and user.at_least(role),
        code=code,
        message=message,
    )
    return HTMLResponse(page, status_code=code)


class SecurityHeaders:
    """Every response, static files and errors included, carries the security headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in SECURITY_HEADERS if k not in names
                ]
            await send(message)

        await self.app(scope, receive, with_headers)


def build_app(console: Console, pages: list[Page]) -> Starlette:
    routes: list[Any] = [Route(p.path, guard(console, p), methods=list(p.methods)) for p in pages]
    from starlette.routing import Mount

    routes.append(
        Mount("/static", StaticFiles(packages=[("vault.console", "static")]), name="static")
    )

    async def not_found(request: Request, exc: Exception) -> Response:
        session = console.sessions.get(request.cookies.get(SESSION_COOKIE), touch=False)
        user = console.users.get(session.user) if session else None
        return _error(console, session, user, 404, "There is nothing here.")

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("internal error: %s", exc.__class__.__name__)
        return _error(console, None, None, 500, "Something went wrong inside the console.")

    app = Starlette(
        routes=routes, exception_handlers={404: not_found, 405: not_found, 500: server_error}
    )
    app.add_middleware(SecurityHeaders)
    return app


def new_login_token() -> str:
    return secrets.token_urlsafe(32)


def cookie_options(max_age: int | None = None) -> dict[str, Any]:
    return {"secure": True, "httponly": True, "samesite": "strict", "path": "/", "max_age": max_age}
