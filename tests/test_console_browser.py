"""The console in a real browser: Playwright driving Debian's Chromium against a real
`vault serve`, with a real Orthanc as the PACS. Sign in with TOTP, find a study, restore it
into a folder (byte-identical) and into Orthanc (the bytes as backed up), see a failed drill
turn the fleet red, be signed out after idle time, be refused a page above one's role, and
find each of those in the audit log or the console's log.

VAULT_CONSOLE_SCREENSHOTS=DIR saves a screenshot of each main page there."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.console import NEW_PASSWORD, ConsoleServer, make_repository, run_vault, write_config
from tests.orthanc import Orthanc, have_orthanc
from tests.test_console import _env
from tests.test_pacs import as_orthanc_keeps_it

# Debian's binary itself, not its launcher script (which only adds flags for desktops).
CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium",) if os.access(p, os.X_OK)), None) or (
    shutil.which("chromium") or shutil.which("chromium-browser")
)
playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"
)
SHOTS = os.environ.get("VAULT_CONSOLE_SCREENSHOTS")
WAIT_MS = 90_000


def shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc | None]:
    if not have_orthanc():
        yield None
        return
    server = Orthanc(tmp_path_factory.mktemp("orthanc")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def console(
    tmp_path_factory: pytest.TempPathFactory, archive_template: Path, orthanc: Orthanc | None
) -> Iterator[ConsoleServer]:
    root = tmp_path_factory.mktemp("console-browser")
    env = _env(root)
    repos = {
        "main": make_repository(root / "main", archive_template, env),
        "second": make_repository(root / "second", archive_template, env),
    }
    config = write_config(root, repos, root / "password")
    if orthanc is not None:
        (root / "policies-main" / "pacs.toml").write_text(
            f'[[endpoint]]\nname = "orthanc"\nae_title = "{orthanc.ae_title}"\n'
            f'host = "127.0.0.1"\nport = {orthanc.dicom_port}\nallow_plain = true\n'
        )
    server = ConsoleServer(root, config, env)
    # One account a test: the server takes each TOTP code once, and a code is good for 30 s.
    for name, role in (("olga", "operator"), ("otto", "operator"), ("omar", "operator"),
                       ("vera", "viewer"), ("adam", "admin")):  # fmt: skip
        server.add_user(name, role)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def sign_in(browser: Any, server: ConsoleServer, name: str) -> Any:
    """A new browser context signed in as `name`, through the form, with a TOTP code."""
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    account = server.accounts[name]
    page.goto(server.url + "/")
    assert page.url.endswith("/login")
    shot(page, "login")
    page.fill("#name", name)
    page.fill("#password", account.password)
    page.fill("#code", account.take())
    page.click("#sign-in")
    if account.fresh:
        page.wait_for_url("**/password")
        page.fill("#current", account.password)
        page.fill("#new", NEW_PASSWORD)
        page.fill("#again", NEW_PASSWORD)
        page.click("#save-password")
        account.password, account.fresh = NEW_PASSWORD, False
    page.wait_for_url(server.url + "/")
    assert page.inner_text("#who").startswith(name)
    return page


def study_files(server: ConsoleServer, repo: str, modality: str) -> dict[str, Any]:
    found = run_vault(
        "studies",
        "--repo",
        str(server.root / repo / "repo"),
        "--modality",
        modality,
        "--json",
        env=server.env,
    )
    return dict(json.loads(found.stdout)[0])


def find_study(page: Any, server: ConsoleServer, study: dict[str, Any]) -> None:
    page.goto(server.url + "/r/main/studies")
    page.fill("#patient_id", study["patient_id"])
    page.click("#search")
    page.wait_for_selector("#results")
    shot(page, "studies")
    page.click(f'a.study[href$="/{study["catalog_id"]}"]')
    page.wait_for_selector("#restore-form")
    assert study["patient_id"] in page.inner_text("#patient")
    assert study["patient_id"] not in page.url  # minimum necessary: no patient in a URL


def audit_rows(page: Any, server: ConsoleServer, repo: str) -> list[tuple[str, str, str]]:
    page.goto(f"{server.url}/r/{repo}/audit")
    rows = page.locator("#audit tbody tr")
    return [
        (
            rows.nth(i).locator("td.actor").inner_text(),
            rows.nth(i).locator("td.action").inner_text(),
            rows.nth(i).locator("td").nth(4).inner_text(),
        )
        for i in range(rows.count())
    ]


def test_operator_finds_a_study_and_restores_it_into_a_folder(
    browser: Any, console: ConsoleServer
) -> None:
    study = study_files(console, "main", "CT")
    page = sign_in(browser, console, "olga")
    shot(page, "fleet")
    find_study(page, console, study)
    shot(page, "study")
    page.fill("#folder", "ct-for-the-viewer")
    page.click("#restore")
    page.wait_for_selector("#task-state.done, #task-state.failed", timeout=WAIT_MS)
    shot(page, "restore-progress")
    assert page.inner_text("#task-state") == "done", page.inner_text("#task-lines")
    assert "every file verified" in page.inner_text("#task-lines")
    restored = console.root / "restores" / "ct-for-the-viewer"
    files = [p for p in restored.rglob("*") if p.is_file()]
    assert len(files) >= study["files"] > 1
    for path in files:  # each at its backed-up path below the folder, byte for byte
        source = Path("/") / path.relative_to(restored)
        assert path.read_bytes() == source.read_bytes(), source
    rows = audit_rows(page, console, "main")
    shot(page, "audit")
    actions = {(actor, action, result) for actor, action, result in rows}
    for action in ("studies-search", "study-view", "restore"):
        assert any(
            a.startswith("console:olga@") and b == action and c == "PASS" for a, b, c in actions
        ), action


def test_operator_restores_a_study_into_orthanc(
    browser: Any, console: ConsoleServer, orthanc: Orthanc | None, archive_template: Path
) -> None:
    if orthanc is None:
        pytest.skip("Orthanc is not installed (apt-get install orthanc)")
    import pydicom

    study = study_files(console, "main", "CT")
    sources = {}
    for path in archive_template.rglob("*"):
        if path.is_file():
            try:
                header = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:
                continue  # a photo, a dump: not DICOM
            if getattr(header, "StudyInstanceUID", None) == study["study_instance_uid"]:
                sources[header.SOPInstanceUID] = path
    page = sign_in(browser, console, "otto")
    find_study(page, console, study)
    page.check("#to-pacs")
    page.select_option("#endpoint", "orthanc")
    page.click("#restore")
    page.wait_for_selector("#task-state.done, #task-state.failed", timeout=WAIT_MS)
    assert page.inner_text("#task-state") == "done", page.inner_text("#task-lines")
    received = orthanc.received_by_sop_instance()
    assert set(received) == set(sources) and len(sources) == study["files"]
    for uid, path in sources.items():  # the data sets as backed up, not transcoded
        assert as_orthanc_keeps_it(received[uid]) == as_orthanc_keeps_it(path.read_bytes())
    rows = audit_rows(page, console, "main")
    assert any(
        a.startswith("console:otto@") and b == "restore-to-pacs" and c == "PASS" for a, b, c in rows
    )


def test_a_failed_drill_turns_the_fleet_red(browser: Any, console: ConsoleServer) -> None:
    page = sign_in(browser, console, "omar")
    row = page.locator('tr[data-repository="second"]')
    assert "FAIL" not in row.locator("td").nth(1).inner_text()
    for pack in (console.root / "second" / "repo" / "data").rglob("*"):
        if pack.is_file():  # every pack damaged: whatever the drill samples, it fails
            with open(pack, "r+b") as handle:
                handle.seek(pack.stat().st_size // 2)
                byte = handle.read(1)
                handle.seek(-1, os.SEEK_CUR)
                handle.write(bytes([byte[0] ^ 0xFF]))
    page.goto(console.url + "/r/second/drills")
    page.click("#start-drill")
    page.wait_for_selector("#task-state.done, #task-state.failed", timeout=WAIT_MS)
    assert "FAIL" in page.inner_text("#task-lines")
    page.goto(console.url + "/")
    row = page.locator('tr[data-repository="second"]')
    assert "fail" in (row.get_attribute("class") or "")
    assert row.locator("td").nth(1).inner_text() == "FAIL"
    assert "FAILED" in row.locator("td").nth(2).inner_text()
    assert page.inner_text("#fleet-level") == "FAIL"
    shot(page, "fleet-red")
    rows = audit_rows(page, console, "second")
    assert any(a.startswith("console:omar@") and b == "drill" and c == "FAIL" for a, b, c in rows)
    page.goto(console.url + "/r/second/drills")
    shot(page, "drills")


def test_a_viewer_is_refused_pages_above_its_role(browser: Any, console: ConsoleServer) -> None:
    page = sign_in(browser, console, "vera")
    page.goto(console.url + "/r/main")
    shot(page, "repository")
    evidence = page.goto(console.url + "/r/main/evidence")
    assert evidence is not None and evidence.status == 200  # a viewer's own page
    shot(page, "evidence")
    page.goto(console.url + "/r/main")
    assert page.locator('nav.sub a[href="/r/main/studies"]').count() == 0
    for path in ("/r/main/studies", "/admin/users", "/r/main/keys"):
        response = page.goto(console.url + path)
        assert response is not None and response.status == 403
        assert "above your role" in page.inner_text("#error")
    shot(page, "refused")
    admin = sign_in(browser, console, "adam")
    admin.goto(console.url + "/admin/users")
    shot(admin, "users")
    events = admin.inner_text("#console-events")
    assert (
        "vera" in events and "DENIED" in events and "GET /r/{repo}/studies needs operator" in events
    )


def test_idle_sign_out(browser: Any, tmp_path: Path, archive_template: Path) -> None:
    env = _env(tmp_path)
    repo = make_repository(tmp_path / "main", archive_template, env)
    config = write_config(tmp_path, {"main": repo}, tmp_path / "password", idle_minutes=0.05)
    server = ConsoleServer(tmp_path, config, env)
    server.add_user("ida", "operator")
    server.start()
    try:
        page = sign_in(browser, server, "ida")
        # The page's script goes to the sign-in page once the 3 s idle time has passed.
        page.wait_for_url("**/login?expired=1", timeout=30_000)
        assert "signed out after a time without activity" in page.inner_text("#message")
        page.goto(server.url + "/r/main")
        assert urlsplit(page.url).path == "/login"  # the server ended the session too
        log = (server.state / "signins.jsonl").read_text()
        assert '"IDLE-SIGN-OUT"' in log and '"ida"' in log
    finally:
        server.stop()
