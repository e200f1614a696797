"""The console in real headless Chromium (Debian's chromium + chromium-driver, Selenium),
against a real API, a real worker, PostgreSQL, RabbitMQ and a real broken Docker stack.

One protected fix run carries the whole story: alice signs in with her token and watches
it appear and change status on the list without a reload; on its page she sees the diff
but no Approve button, and her forged approve POSTs (with and without the CSRF token) are
refused; bob signs in through /?token=, approves the diff hash shown on the button, and
watches the steps move live until it succeeds; the verify log, analysis and artifacts are
on the page. Screenshots of the list and run pages go to var/screenshots/.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.integration.console.conftest import Launcher
from tests.integration.orchestrator.conftest import (
    TERMINAL,
    Orchestrator,
    bring_up,
    health_config,
)
from tests.support.auth import ALICE, BOB, VIC, principals_toml
from tests.support.stack import REPO_ROOT, Stack

SCREENSHOTS = REPO_ROOT / "var" / "screenshots"
GREEN = "rgba(220, 252, 231, 1)"  # pre.diff .add in console.css


def _protected(stack: Stack, hook_port: int) -> str:
    return (
        principals_toml(ALICE, BOB, VIC)
        + health_config(stack)
        + 'protected = true\napproval_requirement = "pre-verify"\n'
        + 'approver_roles = ["sre"]\napproval_valid_minutes = 10\n\n'
        + f'[[orchestrator.webhooks]]\nurl = "http://127.0.0.1:{hook_port}/hook"\n'
        + 'secret = "console-test-secret"\nevents = ["run.awaiting_approval"]\n'
    )


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(scope="module")
def hook_port() -> Iterator[int]:
    """A real local webhook receiver that answers 200."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def orchestrator(console_stack: Stack, launch: Launcher, hook_port: int) -> Orchestrator:
    bring_up(console_stack)
    return launch(console_stack, _protected(console_stack, hook_port), worker=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail("chromium/chromedriver missing: run scripts/ensure-chromium (make test does)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1280,900")
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    try:
        yield chrome
    finally:
        chrome.quit()


def _until(browser: WebDriver, what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    def _probe(_: WebDriver) -> Any:
        try:
            return check()
        except Exception:  # the element may be between two renders
            return False

    return WebDriverWait(browser, timeout, poll_frequency=0.2).until(_probe, message=what)


def _text(browser: WebDriver, css: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, css).text)


def _attr(browser: WebDriver, css: str, name: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, css).get_attribute(name) or "")


def _attr_now(browser: WebDriver, css: str, name: str) -> str:
    """_attr, or "" while the element is being replaced (the list swaps its rows)."""
    try:
        return _attr(browser, css, name)
    except WebDriverException:
        return ""


def _screenshot(
    browser: WebDriver, name: str, width: int = 1280, height: int | None = None
) -> Path:
    """The whole page (the window made as tall as the document), or its top ``height``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.set_window_size(width, 900)
    if height is None:
        height = int(browser.execute_script("return document.documentElement.scrollHeight"))
        height = min(height + 120, 6000)
    browser.set_window_size(width, height)
    path = SCREENSHOTS / name
    assert browser.save_screenshot(str(path)), path
    browser.set_window_size(1280, 900)
    return path


def _detail(orchestrator: Orchestrator, run_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{orchestrator.base_url}/orchestrator/runs/{run_id}", headers=VIC.headers, timeout=30
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


FORGE = """
const done = arguments[arguments.length - 1];
const url = arguments[0], diff = arguments[1];
const token = document.querySelector('input[name=csrf_token]').value;
const post = (body) => fetch(url, {method: 'POST', body: body, credentials: 'same-origin',
  headers: {'content-type': 'application/x-www-form-urlencoded'}})
  .then(r => r.text().then(t => [r.status, t]));
Promise.all([post('diff_sha256=' + diff),
             post('csrf_token=' + encodeURIComponent(token) + '&diff_sha256=' + diff)])
  .then(done, e => done(String(e)));
"""


def _sign_in_with_the_form(browser: WebDriver, base: str) -> None:
    browser.get(base + "/")
    _until(browser, "sign-in page", lambda: "/signin" in browser.current_url)
    browser.find_element(By.ID, "token").send_keys(ALICE.token)
    browser.find_element(By.ID, "signin-button").click()
    _until(browser, "signed in", lambda: _text(browser, "#principal") == "alice")
    assert browser.current_url == base + "/"


def _watch_the_list(browser: WebDriver, orchestrator: Orchestrator) -> str:
    """Submit through the API; the row appears and changes status with no reload."""
    browser.execute_script("window.__kept = 'no reload';")
    response = orchestrator.post_run(instruction="fix the missing dependency", target_service="app")
    assert response.status_code == 202, response.text
    run_id = str(response.json()["run_id"])
    row = f"#run-{run_id}"
    _until(browser, "the new run's row", lambda: browser.find_elements(By.CSS_SELECTOR, row))
    deadline = time.monotonic() + 180
    while _attr_now(browser, row, "data-status") != "awaiting_approval":
        detail = _detail(orchestrator, run_id)
        stuck = detail["status"] in TERMINAL or time.monotonic() > deadline
        assert not stuck, f"row: {_text(browser, row)}\n{orchestrator.explain(detail)}"
        time.sleep(0.3)
    assert browser.execute_script("return window.__kept;") == "no reload"
    assert "fix the missing dependency" in _text(browser, row)
    assert _text(browser, f"{row} td[data-label=Requester]") == "alice"
    return run_id


def _requester_cannot_approve(browser: WebDriver, orchestrator: Orchestrator, run_id: str) -> str:
    browser.find_element(By.CSS_SELECTOR, f"#run-{run_id} a").click()
    _until(browser, "run page", lambda: _attr(browser, "#run", "data-run") == run_id)
    assert _text(browser, "#run-status") == "awaiting_approval"
    assert browser.find_elements(By.ID, "approve") == []
    assert browser.find_elements(By.ID, "cancel")  # alice is an operator
    diff_sha = _text(browser, "#gate-diff")
    patch = (orchestrator.artifact_root / run_id / "patch.diff").read_bytes()
    assert diff_sha == hashlib.sha256(patch).hexdigest()
    assert browser.find_elements(By.CSS_SELECTOR, "#diff .add")
    url = f"/runs/{run_id}/approve"
    (no_csrf, with_csrf) = browser.execute_async_script(FORGE, url, diff_sha)
    assert no_csrf[0] == 403
    assert "CSRF" in no_csrf[1]
    assert with_csrf[0] == 403
    assert "four-eyes" in with_csrf[1]
    detail = _detail(orchestrator, run_id)
    assert detail["status"] == "awaiting_approval"
    assert detail["approval"] is None
    return diff_sha


def _approver_approves(browser: WebDriver, base: str, run_id: str, diff_sha: str) -> str:
    """Bob signs in through ?token=, keeps the list open in a second window, approves."""
    browser.find_element(By.ID, "signout").click()
    _until(browser, "signed out", lambda: "/signin" in browser.current_url)
    browser.get(f"{base}/runs/{run_id}?token={BOB.token}")
    _until(browser, "bob's run page", lambda: _text(browser, "#principal") == "bob")
    assert browser.current_url == f"{base}/runs/{run_id}"  # the token left the URL
    run_window = browser.current_window_handle
    browser.switch_to.new_window("window")
    browser.get(base + "/")
    _until(browser, "the list", lambda: browser.find_elements(By.ID, f"run-{run_id}"))
    browser.execute_script("window.__kept = 'no reload';")
    list_window = browser.current_window_handle
    browser.switch_to.window(run_window)
    assert _text(browser, "#approve-diff") == diff_sha
    assert "Approve as bob (sre)" in _text(browser, "#approve")
    browser.find_element(By.ID, "approve").click()
    _until(browser, "resumed", lambda: _text(browser, "#run-status") in ("running", "succeeded"))
    assert "bob (sre)" in _text(browser, "#approved-by")
    browser.execute_script("window.__kept = 'no reload';")
    return list_window


def _kept(browser: WebDriver) -> bool:
    return bool(browser.execute_script("return window.__kept;") == "no reload")


def _steps_move_live(browser: WebDriver, orchestrator: Orchestrator, run_id: str, lw: str) -> None:
    """Both windows, watched in turn until the run ends: the run page's build step and the
    list's row change state while neither page reloads."""
    run_window = browser.current_window_handle
    build_seen: set[str] = set()
    rows_seen: set[str] = set()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and "succeeded" not in rows_seen:
        browser.switch_to.window(run_window)
        if _kept(browser):
            build_seen.add(_attr_now(browser, "#step-build", "data-status"))
        browser.switch_to.window(lw)
        if _kept(browser):
            rows_seen.add(_attr_now(browser, f"#run-{run_id}", "data-status"))
        time.sleep(0.2)
    detail = _detail(orchestrator, run_id)
    assert detail["status"] == "succeeded", orchestrator.explain(detail)
    assert {"running", "succeeded"} <= rows_seen, rows_seen
    assert "succeeded" in build_seen, build_seen  # shown by the event stream, no reload
    browser.close()
    browser.switch_to.window(run_window)
    _until(browser, "succeeded", lambda: _text(browser, "#run-status") == "succeeded", 60)


def _run_page_shows_everything(browser: WebDriver, orchestrator: Orchestrator, run_id: str) -> None:
    verify_log = (orchestrator.artifact_root / run_id / "verify.log").read_text()
    first = verify_log.splitlines()[0]
    _until(
        browser,
        "verify log streamed",
        lambda: first in str(_attr(browser, "#log-verify pre", "textContent")),
    )
    for step in ("analyze", "patch", "build", "restart", "verify"):
        assert _attr(browser, f"#step-{step}", "data-status") == "succeeded"
    added = browser.find_elements(By.CSS_SELECTOR, "#diff .add")
    assert any(line.text.startswith("+") for line in added)
    assert added[0].value_of_css_property("background-color") == GREEN
    assert "python_missing_module" in _text(browser, "#failure-kind")
    assert _text(browser, "#container-state").startswith("exited")
    shown = {row.text for row in browser.find_elements(By.CSS_SELECTOR, "#artifacts td.sha")}
    for artifact in _detail(orchestrator, run_id)["artifacts"]:
        assert artifact["checksum"] in shown
    webhook = _text(browser, "#webhooks tbody tr")
    assert "run.awaiting_approval" in webhook
    assert "delivered (HTTP 200)" in webhook
    link = _attr(browser, "#artifacts a", "href")
    status = browser.execute_async_script(
        "const done = arguments[1]; fetch(arguments[0]).then(r => done(r.status));", link
    )
    assert status == 200


@pytest.mark.docker
def test_console_follows_gates_and_approves_a_real_fix_run(
    orchestrator: Orchestrator, browser: WebDriver
) -> None:
    base = orchestrator.base_url
    orchestrator.headers = ALICE.headers
    _sign_in_with_the_form(browser, base)
    run_id = _watch_the_list(browser, orchestrator)
    _screenshot(browser, "console-runs.png")
    diff_sha = _requester_cannot_approve(browser, orchestrator, run_id)
    list_window = _approver_approves(browser, base, run_id, diff_sha)
    _steps_move_live(browser, orchestrator, run_id, list_window)
    _run_page_shows_everything(browser, orchestrator, run_id)
    _screenshot(browser, "console-run.png")
    _screenshot(browser, "console-run-top.png", height=1700)  # the README's picture

    # A link from another site (a chat message, a webhook's run_page) still lands signed in.
    browser.get(f"data:text/html,<a id='go' href='{base}/runs/{run_id}'>run</a>")
    browser.find_element(By.ID, "go").click()
    _until(browser, "followed the link", lambda: _text(browser, "#principal") == "bob")
    assert browser.current_url == f"{base}/runs/{run_id}"

    browser.set_window_size(390, 844)  # a phone: nothing wider than the screen
    overflow = browser.execute_script(
        "return document.documentElement.scrollWidth - window.innerWidth;"
    )
    assert overflow <= 1, overflow
    _screenshot(browser, "console-run-phone.png", width=390)
    browser.get(base + "/")
    _screenshot(browser, "console-runs-phone.png", width=390)
