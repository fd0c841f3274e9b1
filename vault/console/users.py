"""The console's user accounts: one JSON file in the console's state directory (mode 0600),
outside every repository, shared by `vault console user …` and the running server.

Each account has a role, an Argon2id password hash (the key slots' parameters), a TOTP
secret, and its lockout state. The file is rewritten whole (temporary file, fsync, rename)
under an flock, so the command line and the server never lose each other's changes. The TOTP
secrets are stored as an authenticator needs them (like pam_google_authenticator's files):
the file's mode and the host's protection guard them.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from vault.console import totp
from vault.errors import UsageError
from vault.format import crypto
from vault.repo.keys import kdf_params_for_new_slots

VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"
ROLES = (VIEWER, OPERATOR, ADMIN)  # each may do all the roles before it may
RANK = {role: number for number, role in enumerate(ROLES)}
# Roles that see patient data or change things sign in with a second factor.
TOTP_REQUIRED = (OPERATOR, ADMIN)
USERS_FILE = "users.json"
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-")


@dataclass(frozen=True)
class PasswordHash:
    salt: str
    memory_kib: int
    iterations: int
    lanes: int
    digest: str

    @classmethod
    def make(cls, password: str) -> PasswordHash:
        params = kdf_params_for_new_slots()
        salt = crypto.random_bytes(crypto.SALT_BYTES)
        digest = crypto.argon2id(password.encode(), salt, params)
        return cls(
            base64.b64encode(salt).decode(),
            params.memory_kib,
            params.iterations,
            params.lanes,
            base64.b64encode(digest).decode(),
        )

    def matches(self, password: str) -> bool:
        params = crypto.Argon2Params(self.memory_kib, self.iterations, self.lanes)
        got = crypto.argon2id(password.encode(), base64.b64decode(self.salt), params)
        return crypto.constant_time_equal(got, base64.b64decode(self.digest))


@functools.cache
def _dummy() -> PasswordHash:
    """Spent on a sign-in with an unknown name, so the answer takes as long as for a known
    one."""
    return PasswordHash.make(secrets.token_urlsafe(15))


@dataclass(frozen=True)
class User:
    name: str
    role: str
    password: PasswordHash
    totp_secret: str = ""  # "" only for a viewer made with --no-totp
    totp_last_step: int = 0
    must_change: bool = True  # the one-time password from `user add` is changed at first use
    break_glass: bool = False  # the emergency-access account: every sign-in is an alert
    failures: int = 0
    locked_until: float = 0.0
    created: str = ""
    password_changed: str = ""

    def at_least(self, role: str) -> bool:
        return RANK[self.role] >= RANK[role]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> User:
        return cls(**{**doc, "password": PasswordHash(**doc["password"])})


@dataclass(frozen=True)
class NewUser:
    user: User
    one_time_password: str
    totp_uri: str  # "" without a second factor


@dataclass(frozen=True)
class SignIn:
    """What a sign-in attempt came to: the user, or why not (never which part was wrong)."""

    user: User | None
    outcome: str  # PASS | FAIL | LOCKED
    detail: str = ""  # for the sign-in log: never the password or the code


def check_name(name: str) -> str:
    if not name or len(name) > 64 or not set(name) <= _NAME_CHARS or name[0] in ".-":
        raise UsageError(
            f"user name {name!r}: use 1-64 lower-case letters, digits, dots, dashes or underscores"
        )
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UsageError(f"role {role!r}: choose one of {', '.join(ROLES)}")
    return role


@dataclass
class UserStore:
    directory: Path
    _cache: tuple[float, dict[str, User]] = field(default=(-1.0, {}))
    _threads: threading.Lock = field(default_factory=threading.Lock)

    @property
    def path(self) -> Path:
        return self.directory / USERS_FILE

    # -- the file -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, User]]:
        """The accounts, for changing: written back, when changed, as the block ends without
        error. The flock covers the command line and the server; the thread lock, the
        server's own threads (an flock is per open file, not per thread)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._threads, open(self.directory / "users.lock", "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            users = self._read()
            before = dict(users)
            yield users
            if users != before:
                self._write(users)

    def _read(self) -> dict[str, User]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise UsageError(
                f"cannot read the console's users file {self.path}: {exc.strerror}"
            ) from None
        try:
            doc = json.loads(text)
            return {u["name"]: User.from_json(u) for u in doc["users"]}
        except (ValueError, KeyError, TypeError):
            raise UsageError(f"the console's users file {self.path} is damaged") from None

    def _write(self, users: dict[str, User]) -> None:
        doc = {
            "version": 1,
            "users": [u.to_json() for u in sorted(users.values(), key=lambda u: u.name)],
        }
        temporary = self.path.with_name(f".{USERS_FILE}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(doc, handle, indent=1)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        self._cache = (-1.0, {})

    def users(self) -> dict[str, User]:
        """The accounts as the file holds them now (re-read when it changed)."""
        try:
            mtime = self.path.stat().st_mtime_ns / 1e9
        except FileNotFoundError:
            return {}
        if self._cache[0] != mtime:
            self._cache = (mtime, self._read())
        return self._cache[1]

    def get(self, name: str) -> User | None:
        return self.users().get(name)

    # -- changes --------------------------------------------------------------------------

    def add(
        self, name: str, role: str, *, with_totp: bool = True, break_glass: bool = False
    ) -> NewUser:
        check_name(name)
        check_role(role)
        if not with_totp and role in TOTP_REQUIRED:
            raise UsageError(
                f"the {role} role signs in with a second factor: --no-totp is for viewers"
            )
        if break_glass and role != ADMIN:
            raise UsageError("the emergency-access (break-glass) account is an admin")
        one_time = secrets.token_urlsafe(15)
        secret = totp.new_secret() if with_totp else ""
        now = _now_iso()
        user = User(
            name, role, PasswordHash.make(one_time), secret, break_glass=break_glass, created=now
        )
        with self._locked() as users:
            if name in users:
                raise UsageError(f"user {name!r} exists already (remove it first)")
            users[name] = user
        return NewUser(user, one_time, totp.enrolment_uri(secret, name) if secret else "")

    def remove(self, name: str) -> None:
        with self._locked() as users:
            if name not in users:
                raise UsageError(f"no console user {name!r}")
            del users[name]

    def unlock(self, name: str) -> None:
        self._update(name, failures=0, locked_until=0.0)

    def set_password(self, name: str, password: str) -> User:
        return self._update(
            name,
            password=PasswordHash.make(password),
            must_change=False,
            password_changed=_now_iso(),
        )

    def _update(self, name: str, **changes: Any) -> User:
        with self._locked() as users:
            if name not in users:
                raise UsageError(f"no console user {name!r}")
            users[name] = replace(users[name], **changes)
            return users[name]

    # -- signing in -----------------------------------------------------------------------

    def sign_in(
        self, name: str, password: str, code: str, *, max_failures: int, lockout_seconds: float
    ) -> SignIn:
        """Check a sign-in. The password is checked whatever the name and the account's
        state, so an unknown or locked account takes as long to answer as a real one. Then,
        in one step under the lock, the account is read again and its code, lockout and
        failures decided and written: sign-ins sent in parallel each count, and a code is
        taken once."""
        known = self.get(name)
        password_ok = (known.password if known else _dummy()).matches(password)
        now = time.time()
        with self._locked() as users:
            user = users.get(name)
            if user is None:
                return SignIn(None, "FAIL", "unknown user")
            if user.locked_until > now:
                return SignIn(None, "LOCKED", "account locked")
            # A password changed since the check above is not the one that was checked.
            password_ok = password_ok and known is not None and known.password == user.password
            step = (
                totp.matching_step(user.totp_secret, code, now, user.totp_last_step)
                if user.totp_secret
                else 0
            )
            if password_ok and step is not None:
                changed: dict[str, Any] = {"failures": 0, "locked_until": 0.0}
                if user.totp_secret:
                    changed["totp_last_step"] = step
                users[name] = replace(user, **changed)
                return SignIn(users[name], "PASS")
            users[name] = _after_failure(user, now, max_failures, lockout_seconds)
            locked = users[name].locked_until > 0
        what = "wrong password" if not password_ok else "wrong or reused code"
        return SignIn(
            None, "LOCKED" if locked else "FAIL", what + (", account locked" if locked else "")
        )

    def check_password(
        self, name: str, password: str, *, max_failures: int, lockout_seconds: float
    ) -> bool:
        """The current password, asked again to change it: a wrong one counts as a failed
        sign-in (a session left open must not be a way to guess the password)."""
        now = time.time()
        known = self.get(name)
        if known is None or known.locked_until > now:
            return False  # a locked account changes no password, and its lockout runs on
        if known.password.matches(password):
            return True
        with self._locked() as users:
            user = users.get(name)
            if user is not None:
                users[name] = _after_failure(user, now, max_failures, lockout_seconds)
        return False


def _after_failure(user: User, now: float, max_failures: int, lockout_seconds: float) -> User:
    """One more failure: at `max_failures` the account locks and the count starts again. A
    lockout already running is kept as it is."""
    if user.locked_until > now:
        return user
    failures = user.failures + 1
    if failures >= max_failures:
        return replace(user, failures=0, locked_until=now + lockout_seconds)
    return replace(user, failures=failures, locked_until=0.0)


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
