"""The web console over real HTTPS from a real `vault serve`: every route as every role, CSRF
on every state-changing route, security headers, sign-in failures and lockout, the address
limit, the users file, TOTP against RFC 6238, and no patient data in URLs or the server log.
The browser flows are in test_console_browser.py."""

from __future__ import annotations

import functools
import json
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import PASSWORD as CONFTEST_PASSWORD
from tests.conftest import RunCli
from tests.console import (
    NEW_PASSWORD,
    ConsoleServer,
    Reply,
    make_repository,
    run_vault,
    totp_secret_of,
    write_config,
)
from tests.repos import RepoHandle
from vault.console import totp
from vault.console.routes import PAGES
from vault.console.users import RANK, ROLES, UserStore
from vault.console.web import Page
from vault.errors import UsageError
from vault.format import layout
from vault.jobs.studies import StudyFilter, StudyIndex, StudyRow
from vault.policy.console import load_console_policy
from vault.repo.repository import Repository
from vault.repo.snapshot_cache import SnapshotCache

PASSWORD = "correct horse battery staple"


def _env(root: Path) -> dict[str, str]:
    password = root / "password"
    password.write_text(PASSWORD + "\n")
    password.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "AWS_"))}
    env |= {
        "VAULT_TEST_FAST_KDF": "1",
        "VAULT_TEST_SUITE": "1",
        "VAULT_STATE_DIR": str(root / "vault-state"),
        "VAULT_PASSWORD_FILE": str(password),
    }
    return env


def _patients(archive: Path) -> set[str]:
    """Patient IDs and names in the archive, as the catalog holds them."""
    found = set()
    for path in archive.rglob("*.dcm"):
        text = path.read_bytes()[:4096]
        found.update(m.decode() for m in re.findall(rb"DEMO-\d{4}", text))
    assert found, "the sample archive has no DEMO patient IDs"
    return found


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, archive_template: Path
) -> Iterator[ConsoleServer]:
    root = tmp_path_factory.mktemp("console")
    env = _env(root)
    repo = make_repository(root / "main", archive_template, env)
    # "gone" names storage that holds no repository (a practice whose disk is unplugged): the
    # console still starts and serves the others.
    gone = root / "gone"
    # "odd" holds a folder whose name is not UTF-8 beside one whose name is that name's
    # escaped display form: the console must restore the one chosen.
    odd_source = root / "odd-source"
    for name, file in ((b"caf\xe9", b"latin-1.txt"), (b"caf\\xe9", b"escaped.txt")):
        folder = os.fsencode(odd_source) + b"/" + name
        os.makedirs(folder)
        with open(folder + b"/" + file, "wb") as handle:
            handle.write(file)
    odd = make_repository(root / "odd", odd_source, env)
    config = write_config(
        root,
        {"main": repo, "gone": gone, "odd": odd},
        root / "password",
        max_failures=3,
        address_failures=100,  # the tests' failures all come from 127.0.0.1
    )
    console = ConsoleServer(root, config, env)
    for role in ROLES:
        console.add_user(role, role)
    console.add_user("locked", "operator")
    console.start()
    try:
        yield console
    finally:
        console.stop()


def _fill(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: "main" if m[1] == "repo" else "x" + m[1], path)


def _pages_of_the_repository() -> list[Page]:
    """The signed-in GET pages whose path needs nothing but the repository's name."""
    return [
        page
        for page in PAGES
        if page.role is not None
        and "GET" in page.methods
        and "{" not in _fill(page.path).replace("main", "")
    ]


def test_every_route_as_every_role(server: ConsoleServer) -> None:
    """Each role is refused, before anything runs, every page above it; every form route of a
    role's own asks for the CSRF token; a visitor who has not signed in is sent to sign in."""
    clients = {role: server.session(role) for role in ROLES}
    stranger = server.client()
    guarded = [p for p in PAGES if p.role is not None]
    assert {p.path for p in PAGES if p.role is None} == {"/login"}
    for page in guarded:
        path = _fill(page.path)
        for method in page.methods:
            anonymous = stranger.request(method, path, {} if method == "POST" else None)
            if method == "GET":
                assert anonymous.status == 303 and anonymous.location.startswith("/login"), path
            else:  # no session: refused at the origin/CSRF check or sent to sign in
                assert anonymous.status in (303, 403), path
            for role, web in clients.items():
                if method == "POST" and page.path == "/logout":
                    continue  # would end the session the other checks use; tested below
                body = {"csrf": "not-the-token"} if method == "POST" else None
                reply = web.request(method, path, body)
                if RANK[role] < RANK[page.role]:
                    assert reply.status == 403, (role, method, path, reply.status)
                    assert "above your role" in reply.text, (role, path)
                elif method == "POST":
                    assert reply.status == 403, (role, method, path)
                    assert "did not come from this console" in reply.text, (role, path)
                else:
                    assert reply.status not in (403, 500), (role, path, reply.status)


def test_a_repository_that_cannot_be_opened_is_red_not_fatal(server: ConsoleServer) -> None:
    web = server.session("viewer")
    fleet = web.get("/")
    assert fleet.status == 200
    row = re.search(r'<tr class="(\w+)" data-repository="gone">(.*?)</tr>', fleet.text, re.S)
    assert row and row[1] == "fail" and "cannot open it" in row[2], fleet.text
    assert 'id="fleet-level">FAIL<' in fleet.text
    served = re.search(r'<tr class="(\w+)" data-repository="main">', fleet.text)
    assert served and served[1] != "fail"
    page = web.get("/r/gone")
    assert page.status == 500 and "The repository could not do this" in page.text
    assert "Traceback" not in page.text and "Traceback" not in server.log.read_text()
    assert web.get("/r/main").status == 200


def test_viewer_sees_no_patient_data(server: ConsoleServer, archive_template: Path) -> None:
    web = server.session("viewer")
    patients = _patients(archive_template)
    for page in _pages_of_the_repository():
        reply = web.get(_fill(page.path))
        for patient in patients:
            assert patient not in reply.text, (page.path, reply.status)


def test_security_headers_and_no_inline_script(server: ConsoleServer) -> None:
    web = server.client()
    for path in ("/login", "/static/console.js", "/static/console.css", "/no-such-page"):
        reply = web.get(path)
        csp = reply.headers.get("content-security-policy", "")
        assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp, path
        assert "frame-ancestors 'none'" in csp
        assert reply.headers.get("x-content-type-options") == "nosniff"
        assert reply.headers.get("strict-transport-security", "").startswith("max-age=")
        assert reply.headers.get("cache-control") == "no-store"
    admin = server.session("admin")
    for page in _pages_of_the_repository():
        reply = admin.get(_fill(page.path))
        if "attachment" in reply.headers.get("content-disposition", ""):
            continue  # a download (a report to keep), not a console page
        text = reply.text
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), page.path  # no inline script
        assert " style=" not in text and "<style" not in text, page.path
        assert "javascript:" not in text, page.path


def test_session_cookie_is_secure_httponly_strict(server: ConsoleServer) -> None:
    account = server.add_user("cookie", "viewer", "--no-totp")
    web = server.client()
    token = web.csrf("/login")
    reply = web.request(
        "POST",
        "/login",
        {"name": "cookie", "password": account.password, "code": "", "csrf": token},
    )
    cookie = next(c for c in reply.set_cookies if c.startswith("vault_session=")).lower()
    assert "vault_session=" in cookie
    for flag in ("secure", "httponly", "samesite=strict"):
        assert flag in cookie


def _message(reply: Reply) -> str:
    found = re.search(r'<p class="message" id="message">(.*?)</p>', reply.text, re.S)
    return found[1] if found else ""


def test_sign_in_failures_say_the_same_and_lock_the_account(server: ConsoleServer) -> None:
    """A wrong password, a wrong code, an unknown name and a locked account get one answer:
    the form tells nobody which names exist. The log says what happened."""
    account = server.accounts["locked"]
    web = server.client()
    good = account.code()
    wrong_code = "111111" if good == "000000" else "000000"
    replies = [
        web.sign_in("locked", "not it", good),
        web.sign_in("locked", account.password, wrong_code),
        web.sign_in("nobody", "not it", "123456"),
        web.sign_in("locked", "not it either", good),  # max_failures = 3: now locked
        web.sign_in("locked", account.password, good),  # right, but locked
        web.sign_in("pasted " + account.password, "", ""),  # a password in the name field
    ]
    assert {(r.status, _message(r)) for r in replies} == {(401, _message(replies[0]))}
    assert "not right" in _message(replies[0]) and "locked" in _message(replies[0])
    assert UserStore(server.state).get("locked").locked_until > 0  # type: ignore[union-attr]
    run_vault("console", "user", "unlock", "locked", "--config", str(server.config), env=server.env)
    assert web.sign_in("locked", account.password, account.take()).status == 303
    log = (server.state / "signins.jsonl").read_text()
    outcomes = [e["outcome"] for e in map(json.loads, log.splitlines()) if e["user"] == "locked"]
    assert outcomes == ["FAIL", "FAIL", "LOCKED", "LOCKED", "PASS"]
    assert account.password not in log and "not it" not in log
    assert "nobody" not in log and "(unknown name)" in log


def _real_kdf_account(server: ConsoleServer, name: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """An operator whose password hash has the real Argon2id parameters (the other accounts
    have the test suite's cheap ones), so that each sign-in takes as long as in a practice and
    parallel ones really overlap. Its one-time password is changed at once."""
    monkeypatch.delenv("VAULT_TEST_FAST_KDF", raising=False)
    made = UserStore(server.state).add(name, "operator")
    UserStore(server.state).set_password(name, NEW_PASSWORD)
    return totp_secret_of(made.totp_uri)


def _in_parallel(calls: list[Callable[[], Reply]]) -> list[Reply]:
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], Reply]) -> Reply:
        start.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_parallel_guesses_each_count_and_a_code_is_taken_once(
    server: ConsoleServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = _real_kdf_account(server, "racer", monkeypatch)
    clients = [server.client() for _ in range(4)]
    guesses = _in_parallel(
        [functools.partial(w.sign_in, "racer", f"guess {n}", "") for n, w in enumerate(clients)]
    )
    assert all(r.status == 401 for r in guesses)
    user = UserStore(server.state).get("racer")
    assert user is not None and user.locked_until > 0  # 4 guesses, max_failures 3: locked
    run_vault("console", "user", "unlock", "racer", "--config", str(server.config), env=server.env)
    code = totp.hotp(secret, totp.step_of(time.time()))
    same_code = _in_parallel(
        [functools.partial(w.sign_in, "racer", NEW_PASSWORD, code) for w in clients]
    )
    assert sorted(r.status for r in same_code) == [303, 401, 401, 401]


def test_a_code_is_good_once(server: ConsoleServer) -> None:
    account = server.add_user("once", "operator")
    first, second = server.client(), server.client()
    code = account.take()
    assert first.sign_in("once", account.password, code).status == 303
    assert second.sign_in("once", account.password, code).status == 401


def test_removed_user_loses_the_session(server: ConsoleServer) -> None:
    server.add_user("leaving", "viewer", "--no-totp")
    web = server.signed_in("leaving")
    assert web.get("/").status == 200
    run_vault(
        "console", "user", "remove", "leaving", "--config", str(server.config), env=server.env
    )
    reply = web.get("/")
    assert reply.status == 303 and reply.location.startswith("/login")


def test_a_session_ends_when_its_account_is_made_again_under_its_name(
    server: ConsoleServer,
) -> None:
    """Removed and made again on the command line before the old session's next request (a
    stolen laptop's account replaced, as an admin role): the old session is not the new
    account's."""
    server.add_user("replaced", "viewer", "--no-totp")
    web = server.signed_in("replaced")
    assert web.get("/").status == 200
    for args in (("remove", "replaced"), ("add", "replaced", "--role", "admin")):
        run_vault("console", "user", *args, "--config", str(server.config), env=server.env)
    reply = web.get("/admin/users")
    assert reply.status == 303 and reply.location.startswith("/login")


def test_a_locked_account_changes_no_password_and_stays_locked(server: ConsoleServer) -> None:
    server.add_user("stuck", "viewer", "--no-totp")
    web = server.signed_in("stuck")
    for _ in range(3):  # max_failures: locked
        assert server.client().sign_in("stuck", "not it", "").status == 401
    locked = UserStore(server.state).get("stuck")
    assert locked is not None and locked.locked_until > 0
    other = "quartz meadow lantern 9 harbor"
    for current in ("not it", NEW_PASSWORD):  # a guess, then the right one: both refused
        reply = web.post("/password", {"current": current, "new": other, "again": other})
        assert reply.status == 400
    after = UserStore(server.state).get("stuck")
    assert after is not None and after.locked_until == locked.locked_until
    assert after.password == locked.password


def test_a_password_change_ends_the_other_sessions(server: ConsoleServer) -> None:
    server.add_user("mover", "viewer", "--no-totp")
    here = server.signed_in("mover")  # changes the one-time password
    there = server.signed_in("mover")
    other = "quartz meadow lantern 9 harbor"
    wrong = here.post("/password", {"current": "not it", "new": other, "again": other})
    assert wrong.status == 400 and "current password is not right" in wrong.text
    user = UserStore(server.state).get("mover")
    assert user is not None and user.failures == 1  # a wrong current password is a failure
    done = here.post("/password", {"current": NEW_PASSWORD, "new": other, "again": other})
    assert done.status == 303
    assert here.get("/").status == 200
    assert there.get("/").status == 303  # the other session is over


def test_account_changes_are_in_the_console_log(server: ConsoleServer) -> None:
    admin = server.session("admin")
    added = admin.post("/admin/users", {"name": "temp", "role": "viewer"})
    assert added.status == 200 and "temp" in added.text
    assert admin.post("/admin/users/temp/unlock", {}).status == 303
    assert admin.post("/admin/users/temp/remove", {}).status == 303
    rows = [json.loads(line) for line in (server.state / "signins.jsonl").read_text().splitlines()]
    changes = [
        (r["user"], r["outcome"], r["detail"]) for r in rows if r["outcome"].startswith("USER-")
    ]
    assert ("admin", "USER-ADDED", "temp as viewer") in changes
    assert ("admin", "USER-UNLOCKED", "temp") in changes
    assert ("admin", "USER-REMOVED", "temp") in changes
    by_command_line = [c for c in changes if c[0].startswith("cli:")]
    assert ("USER-ADDED", "operator as operator") in {(c[1], c[2]) for c in by_command_line}


def test_odd_numbers_and_characters_get_an_answer_not_a_traceback(server: ConsoleServer) -> None:
    """'²' passes str.isdigit() and fails int(); hmac.compare_digest refuses non-ASCII text;
    int() refuses 5,000 digits: each, from a URL or a form, once made a 500 and a traceback."""
    admin = server.session("admin")
    for path in (
        "/r/main?page=%C2%B2",
        "/r/main/audit?page=%C2%B2",
        "/r/main/audit?page=" + "9" * 5000,
        "/r/main?page=%D9%A3",
    ):
        assert admin.get(path).status == 200, path
    assert admin.request("POST", "/password", {"csrf": "é"}).status == 403
    for header in ("origin", "referer"):  # not a URL: not ours, and not a traceback
        odd: dict[str, str | None] = {"origin": None, header: "https://[abc"}
        assert admin.request("POST", "/password", {"csrf": "x"}, headers=odd).status == 403
    # A body larger than any form, even before signing in, is refused unread.
    huge = server.client().request("POST", "/login", {"name": "x" * 100_000})
    assert huge.status == 413
    server.add_user("digits", "operator")
    assert server.client().sign_in("digits", "not it", "²²²²²²").status == 401
    assert "Traceback" not in server.log.read_text()


def test_a_folder_whose_name_is_not_utf8_restores_itself_not_its_lookalike(
    server: ConsoleServer,
) -> None:
    web = server.session("operator")
    snapshot = re.search(r'href="/r/odd/snapshots/(\w+)/tree"', web.get("/r/odd").text)
    assert snapshot, "no snapshot tree link on the repository's page"
    tree = f"/r/odd/snapshots/{snapshot[1]}/tree"
    at = ""
    while True:  # down the source's path to the folder holding the two look-alikes
        page = web.get(tree + (f"?at={at}" if at else ""))
        folders = re.findall(r'<a href="\?at=([\w-]+)">([^<]*)/</a>', page.text)
        if len(folders) == 2:
            break
        assert len(folders) == 1, page.text
        at = folders[0][0]
    assert folders[0][1] == folders[1][1]  # both show as caf\xe9
    restored = {}
    for number, (handle, _) in enumerate(folders):
        folder = f"odd-{number}"
        started = web.post("/r/odd/restore-folder", {"at": handle, "folder": folder})
        assert started.status == 303 and started.location.startswith("/tasks/"), started.text
        events = web.get(started.location + "/events")  # the stream ends with the task
        assert '"state": "done"' in events.text, events.text
        target = os.fsencode(server.root / "restores" / folder)
        restored[number] = {
            os.path.relpath(os.path.join(d, f), target)
            for d, _, files in os.walk(target)
            for f in files
        }
    names = sorted(b"/".join(p.split(b"/")[-2:]) for files in restored.values() for p in files)
    assert names == [b"caf\\xe9/escaped.txt", b"caf\xe9/latin-1.txt"], restored


def test_a_study_is_reached_by_its_catalog_id_only(server: ConsoleServer) -> None:
    web = server.session("operator")
    found = web.post("/r/main/studies", {"modality": "CT"})
    catalog_id = re.search(r'href="/r/main/studies/([0-9a-f]{16})"', found.text)
    assert catalog_id, found.text
    page = web.get(f"/r/main/studies/{catalog_id[1]}")
    uid = re.search(r"<dt>Study UID</dt><dd><code>([0-9.]+)</code>", page.text)
    assert page.status == 200 and uid, page.text
    assert web.get(f"/r/main/studies/{uid[1]}").status == 404
    assert web.get(f"/r/main/studies/{catalog_id[1].upper()}").status == 404


def test_a_form_post_must_name_this_console_as_its_origin(server: ConsoleServer) -> None:
    """With the right CSRF token still: no Origin and no Referer, or another site's, is
    refused; a Referer of ours without an Origin passes."""
    server.add_user("poster", "viewer", "--no-totp")
    web = server.signed_in("poster")
    ours = f"https://127.0.0.1:{server.port}"
    for headers, status in (
        ({"origin": None}, 403),
        ({"origin": "https://elsewhere.example"}, 403),
        ({"origin": "null"}, 403),
        ({"origin": None, "referer": "https://elsewhere.example/form"}, 403),
        ({"origin": None, "referer": f"{ours}/password"}, 400),  # through: a short password
    ):
        body = {"current": "x", "new": "y", "again": "y", "csrf": web.csrf("/password")}
        reply = web.request("POST", "/password", body, headers=headers)
        assert reply.status == status, (headers, reply.status)
    # Signing in again over a live session takes the sign-in form's token.
    assert web.sign_in("poster", NEW_PASSWORD, "").status == 303


def test_sign_out_ends_the_session(server: ConsoleServer) -> None:
    server.add_user("brief", "viewer", "--no-totp")
    web = server.signed_in("brief")
    token = web.cookies["vault_session"]
    assert web.post("/logout", {}).status == 303
    web.cookies["vault_session"] = token  # the old cookie, replayed
    assert web.get("/").status == 303


def test_no_patient_data_in_the_server_log_or_urls(
    server: ConsoleServer, archive_template: Path
) -> None:
    web = server.session("operator")
    patient = sorted(_patients(archive_template))[0]
    found = web.post("/r/main/studies", {"patient_id": patient})
    assert found.status == 200 and patient in found.text
    links = re.findall(r'href="([^"]+)"', found.text)
    assert links and not any(patient in link for link in links)
    study = next(link for link in links if "/studies/" in link)
    page = web.get(study)
    assert page.status == 200 and patient in page.text
    log = server.log.read_text()
    assert patient not in log and "DEMO" not in log
    assert "/r/{repo}/studies/{catalog_id}" in log  # the route's pattern, not its URL


def test_search_needs_a_filter(server: ConsoleServer) -> None:
    web = server.session("admin")
    reply = web.post("/r/main/studies", {})
    assert reply.status == 400 and "at least one filter" in reply.text
    assert "DEMO-" not in reply.text


def test_too_many_failures_from_one_address(tmp_path: Path, archive_template: Path) -> None:
    env = _env(tmp_path)
    repo = make_repository(tmp_path / "main", archive_template, env)
    config = write_config(tmp_path, {"main": repo}, tmp_path / "password", address_failures=4)
    console = ConsoleServer(tmp_path, config, env)
    account = console.add_user("real", "viewer", "--no-totp")
    console.start()
    try:
        web = console.client()
        for number in range(4):
            assert web.sign_in(f"guess{number}", "x", "").status == 401
        refused = web.sign_in("real", account.password, "")
        assert refused.status == 429 and "Too many failed sign-ins" in refused.text
    finally:
        console.stop()


def test_users_file_is_private_and_holds_no_password(server: ConsoleServer) -> None:
    path = server.state / "users.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    for account in server.accounts.values():
        assert account.password not in text


def test_totp_matches_rfc_6238() -> None:
    # RFC 6238 appendix B, SHA-1, with the last 6 of its 8 digits.
    secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"  # base32 of "12345678901234567890"
    for when, expected in (
        (59, "287082"),
        (1111111109, "081804"),
        (1234567890, "005924"),
        (2000000000, "279037"),
        (20000000000, "353130"),
    ):
        assert totp.code_at(secret, when) == expected
    assert totp.matching_step(secret, "287082", 59, 0) == 1
    assert totp.matching_step(secret, "287082", 59, 1) is None  # used once already
    assert totp.matching_step(secret, "287082", 59 + 90, 0) is None  # too old


def test_console_config_refuses_a_secret(tmp_path: Path) -> None:
    config = tmp_path / "console.toml"
    config.write_text('[[repository]]\nname = "a"\nurl = "/srv/a"\npassword = "hunter2"\n')
    with pytest.raises(UsageError, match="would put a secret"):
        load_console_policy(config)
    config.write_text('[[repository]]\nname = "A b"\nurl = "/srv/a"\nkey_file = "/k"\n')
    with pytest.raises(UsageError, match="lower-case letters"):
        load_console_policy(config)
    config.write_text(
        '[console]\nidle_minutes = 0\n[[repository]]\nname = "a"\nurl = "/srv/a"\nkey_file = "/k"\n'
    )
    with pytest.raises(UsageError, match="idle_minutes must be a number above 0"):
        load_console_policy(config)


def test_shipped_console_toml_loads_with_its_examples(tmp_path: Path) -> None:
    shipped = (Path(__file__).parent.parent / "policies" / "console.toml").read_text()
    config = tmp_path / "console.toml"
    config.write_text(shipped)
    # As shipped (every repository commented out) it holds accounts, and serves nothing.
    env = _env(tmp_path)
    added = run_vault(
        "console", "user", "add", "first", "--role", "admin", "--config", str(config), env=env
    )
    assert "one-time password" in added.stdout
    assert (tmp_path / "vault-state" / "console" / "users.json").exists()
    refused = run_vault("serve", "--config", str(config), env=env, check=False)
    assert refused.returncode == 2 and "no [[repository]] to serve" in refused.stderr
    config.write_text(
        "\n".join(
            line[2:] if line.startswith("# ") and ("=" in line or "[[" in line) else line
            for line in shipped.splitlines()
        )
    )
    policy = load_console_policy(config)
    assert [r.name for r in policy.repositories] == ["main", "offsite"]
    assert policy.listen == "127.0.0.1:8443" and policy.idle_minutes == 15


def test_snapshot_cache_sees_new_retagged_and_forgotten_snapshots(
    repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    source = tmp_path / "data"
    source.mkdir()
    (source / "a").write_bytes(b"first")
    assert vault("backup", "-r", repo, source).code == 0
    opened = repo.open(CONFTEST_PASSWORD)
    cache = SnapshotCache()
    (first,) = cache.snapshots(opened)
    (source / "a").write_bytes(b"second")
    assert vault("backup", "-r", repo, source).code == 0
    both = cache.snapshots(opened)
    assert len(both) == 2 and both[0] is first  # the first one was not read again
    assert vault("tag", "-r", repo, first.id, "--add", "legal-hold").code == 0
    held = next(s for s in cache.snapshots(opened) if s.id == first.id)
    assert "legal-hold" in held.tags
    opened.storage.delete(layout.snapshot(first.id))  # gone, by whatever means
    assert [s.id for s in cache.snapshots(opened)] == [s.id for s in opened.snapshots()]
    assert first.id not in {s.id for s in cache.snapshots(opened)}


def _every_catalog(repo: Repository, query: StudyFilter) -> list[StudyRow]:
    """The search as round 1 wrote it, every catalog read whole: the index's oracle."""
    rows: dict[str, StudyRow] = {}
    for snapshot in repo.snapshots():
        catalog = repo.load_catalog(snapshot)
        for study in catalog.studies.values() if catalog else ():
            if query.matches(study):
                row = rows.setdefault(study.catalog_id, StudyRow(study))
                row.study = study
                row.snapshots.append(snapshot.id)
    return sorted(rows.values(), key=lambda r: (r.study.study_date, r.study.catalog_id))


def test_study_index_finds_what_reading_every_catalog_finds(
    repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    """The index (the console's, and `vault studies`') against reading every catalog whole,
    over snapshots where a study's header changed, one with an unchanged catalog, and after a
    snapshot disappeared."""
    import pydicom

    assert vault("backup", "-r", repo, archive).code == 0
    assert vault("backup", "-r", repo, archive).code == 0  # an unchanged night: same catalog
    some = next(p for p in sorted(archive.rglob("*.dcm")))
    header = pydicom.dcmread(some)
    header.PatientName = "CORRECTED^NAME"
    header.save_as(some)
    assert vault("backup", "-r", repo, archive).code == 0
    opened = repo.open(CONFTEST_PASSWORD)
    index = StudyIndex()

    def same(query: StudyFilter) -> None:
        index.update(opened, opened.snapshots())
        mine, more = index.search(query, 10_000)
        theirs = _every_catalog(opened, query)
        assert more == 0 and theirs
        assert {f.study.catalog_id: (f.study, f.snapshots) for f in mine} == {
            r.study.catalog_id: (r.study, r.snapshots) for r in theirs
        }
        assert [f.study.catalog_id for f in mine] == [r.study.catalog_id for r in reversed(theirs)]
        everything = {r.study.catalog_id: r for r in _every_catalog(opened, StudyFilter())}
        for row in theirs:  # a study's page: its newest version, every snapshot holding it
            found = index.get(row.study.catalog_id)
            whole = everything[row.study.catalog_id]
            assert found is not None
            assert (found.study, found.snapshots) == (whole.study, whole.snapshots)
        cli = vault("studies", "-r", repo, "--json", *_flags(query))
        assert [d["catalog_id"] for d in cli.json()] == [r.study.catalog_id for r in theirs]

    same(StudyFilter(name="corrected"))
    same(StudyFilter(patient_id=header.PatientID))  # the old name's snapshots and the new one
    same(StudyFilter(modality="CT"))
    same(StudyFilter(since="19000101"))
    first = opened.snapshots()[0]
    opened.storage.delete(layout.snapshot(first.id))
    same(StudyFilter(since="19000101"))
    assert all(first.id not in f.snapshots for f in index.search(StudyFilter(since="19000101"))[0])


def _flags(query: StudyFilter) -> list[str]:
    given = {
        "patient_id": "--patient",
        "name": "--name",
        "since": "--since",
        "modality": "--modality",
    }
    return [
        x for key, flag in given.items() if getattr(query, key) for x in (flag, getattr(query, key))
    ]
