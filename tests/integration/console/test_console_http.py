"""The console over real HTTP (httpx against a real API port, real PostgreSQL/RabbitMQ):
sign-in and its cookie, ?token= sign-in, sign-out, CSRF, and buttons by role.

No worker runs here: the protected run alice submits stays pending, which is enough to
show who may press what (a pre-run gate can be approved while the run waits).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.integration.console.conftest import (
    ConsoleClient,
    Launcher,
    set_cookie_headers,
)
from tests.integration.orchestrator.conftest import Orchestrator
from tests.support.auth import ALICE, BOB, VIC, Caller, principals_toml
from tests.support.stack import Stack

Clients = Callable[[str], ConsoleClient]
COOKIE = "mm_console"

PROTECTED = (
    "[orchestrator.services.app]\n"
    "protected = true\n"
    'approval_requirement = "pre-run"\n'
    'approver_roles = ["sre"]\n'
    "approval_valid_minutes = 10\n"
)


@pytest.fixture(scope="module")
def console(console_stack: Stack, launch: Launcher) -> Orchestrator:
    return launch(console_stack, principals_toml(ALICE, BOB, VIC) + PROTECTED)


@pytest.fixture
def pending_run(console: Orchestrator) -> Iterator[str]:
    """A protected run alice asked for, pending (no worker), cancelled afterwards."""
    response = httpx.post(
        f"{console.base_url}/orchestrator/runs",
        json={"instruction": "fix the missing dependency", "target_service": "app"},
        headers=ALICE.headers,
        timeout=60,
    )
    assert response.status_code == 202, response.text
    run_id = str(response.json()["run_id"])
    yield run_id
    httpx.post(
        f"{console.base_url}/orchestrator/runs/{run_id}/cancel", headers=ALICE.headers, timeout=30
    )


def _signed_in(clients: Clients, console: Orchestrator, caller: Caller) -> ConsoleClient:
    client = clients(console.base_url)
    assert client.sign_in(caller).status_code == 303
    return client


def _detail(console: Orchestrator, run_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{console.base_url}/orchestrator/runs/{run_id}", headers=ALICE.headers, timeout=30
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_sign_in_sets_an_httponly_strict_cookie_without_the_token(
    console: Orchestrator, console_client: Clients
) -> None:
    client = console_client(console.base_url)
    first = client.http.get("/?status=pending")
    assert first.status_code == 303
    assert first.headers["location"] == "/signin?next=%2F%3Fstatus%3Dpending"

    wrong = client.sign_in(Caller("mallory", ("admin",)))
    assert wrong.status_code == 303
    assert "failed=1" in wrong.headers["location"]
    assert set_cookie_headers(wrong, COOKIE) == []

    no_nonce = client.http.post("/signin", data={"token": ALICE.token})
    assert no_nonce.status_code == 403
    assert set_cookie_headers(no_nonce, COOKIE) == []

    response = client.sign_in(ALICE)
    assert response.status_code == 303
    (header,) = set_cookie_headers(response, COOKIE)
    flags = [part.strip().lower() for part in header.split(";")]
    assert "httponly" in flags
    assert "samesite=strict" in flags
    assert "path=/" in flags
    value = header.split(";")[0].split("=", 1)[1]
    assert ALICE.token not in value
    assert hashlib.sha256(ALICE.token.encode()).hexdigest() not in value
    page = client.page("/")
    assert 'id="principal"' in page.text
    assert ">alice<" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    bad_cursor = client.http.get("/?cursor=not-a-cursor")
    assert bad_cursor.status_code == 400
    assert "cursor" in bad_cursor.text
    assert client.http.get("/", params={"service": "a\x00b"}).status_code == 400
    assert client.http.get("/console/rows", params={"service": "a\x00b"}).status_code == 400
    nul = client.http.post(
        "/runs", data={"csrf_token": client.csrf(), "service": "app", "instruction": "a\x00b"}
    )
    assert nul.status_code == 400


def test_token_in_the_url_signs_in_and_is_dropped_from_it(
    console: Orchestrator, console_client: Clients
) -> None:
    client = console_client(console.base_url)
    response = client.http.get(f"/?token={BOB.token}&status=pending")
    assert response.status_code == 303
    assert response.headers["location"] == "/?status=pending"
    assert BOB.token not in response.headers["location"]
    assert len(set_cookie_headers(response, COOKIE)) == 1
    assert ">bob<" in client.page("/?status=pending").text

    stranger = console_client(console.base_url)
    refused = stranger.http.get("/?token=not-a-token")
    assert refused.status_code == 303
    assert refused.headers["location"].startswith("/signin?")
    assert "not-a-token" not in refused.headers["location"]
    assert set_cookie_headers(refused, COOKIE) == []


def test_a_link_from_another_site_is_asked_again_from_this_origin(
    console: Orchestrator, console_client: Clients
) -> None:
    """A cross-site navigation arrives without the SameSite=Strict cookie: the console
    answers a same-origin refresh of the same URL instead of a sign-in redirect."""
    client = console_client(console.base_url)
    cross = client.http.get("/?status=running", headers={"sec-fetch-site": "cross-site"})
    assert cross.status_code == 200
    assert '<meta http-equiv="refresh" content="0;url=/?status=running">' in cross.text
    same = client.http.get("/?status=running", headers={"sec-fetch-site": "same-origin"})
    assert same.status_code == 303
    assert same.headers["location"].startswith("/signin?")


def test_sign_out_needs_the_csrf_token_and_ends_the_session(
    console: Orchestrator, console_client: Clients
) -> None:
    client = _signed_in(console_client, console, ALICE)
    refused = client.http.post("/signout", data={})
    assert refused.status_code == 403
    assert "CSRF" in refused.text
    client.page("/")  # still signed in

    out = client.http.post("/signout", data={"csrf_token": client.csrf()})
    assert out.status_code == 303
    assert out.headers["location"] == "/signin"
    (cleared,) = set_cookie_headers(out, COOKIE)
    assert "max-age=0" in cleared.lower()
    after = client.http.get("/")
    assert after.status_code == 303
    assert after.headers["location"].startswith("/signin")


def test_a_forged_or_tampered_cookie_is_not_a_session(
    console: Orchestrator, console_client: Clients
) -> None:
    client = _signed_in(console_client, console, VIC)
    value = client.http.cookies[COOKIE]
    encoded_id, issued, nonce, signature = value.split(".")
    alice_id = "YWxpY2U"  # base64url("alice"): vic's signature does not cover it
    for forged in (
        f"{alice_id}.{issued}.{nonce}.{signature}",
        f"{encoded_id}.{issued}.{nonce}.{'0' * len(signature)}",
        "alice",
    ):
        browser = console_client(console.base_url)
        browser.http.cookies.set(COOKIE, forged)
        response = browser.http.get("/")
        assert response.status_code == 303, forged
        assert response.headers["location"].startswith("/signin")


def _buttons(html: str) -> set[str]:
    return set(re.findall(r'<button type="submit"[^>]* id="(approve|cancel|retry)"', html))


def test_buttons_are_rendered_by_role(
    console: Orchestrator, console_client: Clients, pending_run: str
) -> None:
    path = f"/runs/{pending_run}"
    alice = _signed_in(console_client, console, ALICE).page(path).text
    bob = _signed_in(console_client, console, BOB).page(path).text
    vic = _signed_in(console_client, console, VIC).page(path).text
    assert _buttons(alice) == {"cancel"}  # the requester may not approve her own run
    assert _buttons(bob) == {"approve"}  # bob approves (sre) but is no operator
    assert "Approve as bob (sre)" in bob
    assert _buttons(vic) == set()  # a viewer only reads
    for html in (alice, bob, vic):
        assert "a principal with role sre, not the requester: bob" in html
    assert 'href="/new"' in alice
    assert 'href="/new"' not in vic


def test_state_changes_need_the_session_csrf_token_and_the_role(
    console: Orchestrator, console_client: Clients, pending_run: str
) -> None:
    approve = f"/runs/{pending_run}/approve"
    alice = _signed_in(console_client, console, ALICE)
    bob = _signed_in(console_client, console, BOB)
    vic = _signed_in(console_client, console, VIC)

    assert bob.http.post(approve, data={}).status_code == 403  # no CSRF token
    assert bob.http.post(approve, data={"csrf_token": alice.csrf()}).status_code == 403
    own = alice.http.post(approve, data={"csrf_token": alice.csrf()})
    assert own.status_code == 403
    assert "four-eyes" in own.text
    viewer = vic.http.post(approve, data={"csrf_token": vic.csrf()})
    assert viewer.status_code == 403
    assert "lacks the approver role" in viewer.text
    no_cancel = vic.http.post(f"/runs/{pending_run}/cancel", data={"csrf_token": vic.csrf()})
    assert no_cancel.status_code == 403
    anonymous = httpx.post(f"{console.base_url}{approve}", data={}, timeout=30)
    assert anonymous.status_code == 401
    assert _detail(console, pending_run)["approval_status"] == "awaiting"

    granted = bob.http.post(approve, data={"csrf_token": bob.csrf()})
    assert granted.status_code == 303, granted.text
    assert granted.headers["location"] == f"/runs/{pending_run}"
    detail = _detail(console, pending_run)
    assert detail["approval_status"] == "granted"
    assert detail["approval"]["approver_id"] == "bob"
    assert detail["approval"]["role"] == "sre"


def test_the_new_run_form_submits_as_the_signed_in_operator(
    console: Orchestrator, console_client: Clients
) -> None:
    alice = _signed_in(console_client, console, ALICE)
    form = alice.page("/new").text
    assert '<option value="app"' in form
    assert '<option value="sibling"' in form
    token = alice.csrf("/new")
    unknown = alice.http.post(
        "/runs", data={"csrf_token": token, "service": "nope", "instruction": "fix it"}
    )
    assert unknown.status_code in (400, 404, 422), unknown.text
    assert 'id="new-error"' in unknown.text
    assert alice.http.post("/runs", data={"service": "app", "instruction": "x"}).status_code == 403
    made = alice.http.post(
        "/runs", data={"csrf_token": token, "service": "app", "instruction": "fix the import"}
    )
    assert made.status_code == 303, made.text
    run_id = made.headers["location"].removeprefix("/runs/")
    detail = _detail(console, run_id)
    assert detail["requested_by"] == "alice"
    assert detail["instruction"] == "fix the import"
    assert (
        alice.http.post(
            f"/runs/{run_id}/cancel", data={"csrf_token": alice.csrf(f"/runs/{run_id}")}
        ).status_code
        == 303
    )
    assert _detail(console, run_id)["status"] == "cancelled"
    dry = alice.http.post(
        "/runs",
        data={"csrf_token": token, "service": "app", "instruction": "what?", "dry_run": "on"},
    )
    assert dry.status_code == 303, dry.text
    dry_id = dry.headers["location"].removeprefix("/runs/")
    assert _detail(console, dry_id)["dry_run"] is True
    assert "dry run" in alice.page(dry.headers["location"]).text
    alice.http.post(f"/runs/{dry_id}/cancel", data={"csrf_token": token})


def test_embedded_default_open_mode_needs_no_sign_in_but_still_a_csrf_token(
    console_stack: Stack, launch: Launcher, console_client: Clients
) -> None:
    """No principals, SQLite and the filesystem broker: the console opens as `local`."""
    open_api = launch(console_stack, "", embedded=True)
    assert (open_api.cwd / "var" / "orchestrator.db").is_file()
    client = console_client(open_api.base_url)
    page = client.http.get("/")
    assert page.status_code == 200
    assert ">local<" in page.text
    assert 'id="signout"' not in page.text
    assert len(set_cookie_headers(page, COOKIE)) == 1
    assert client.http.get("/signin").status_code == 303
    refused = client.http.post("/runs", data={"service": "app", "instruction": "fix it"})
    assert refused.status_code == 403
    made = client.http.post(
        "/runs",
        data={"csrf_token": client.csrf("/new"), "service": "app", "instruction": "fix it"},
    )
    assert made.status_code == 303, made.text
    run_id = made.headers["location"].removeprefix("/runs/")
    run_page = client.page(f"/runs/{run_id}").text
    assert 'id="cancel"' in run_page
    token = client.csrf(f"/runs/{run_id}")
    cancel = client.http.post(f"/runs/{run_id}/cancel", data={"csrf_token": token})
    assert cancel.status_code == 303
    assert 'data-status="cancelled"' in client.page("/").text


def test_retry_is_offered_to_an_operator_on_a_failed_run(
    console_stack: Stack, launch: Launcher, console_client: Clients
) -> None:
    """A worker that cannot reach Docker fails the run at analyze; alice may retry it."""
    failing = launch(
        console_stack,
        principals_toml(ALICE, VIC),
        worker=True,
        worker_env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"},
    )
    failing.headers = ALICE.headers
    run_id = failing.post_run(instruction="fix it", target_service="app").json()["run_id"]
    assert failing.wait_terminal(run_id, timeout=120)["status"] == "failed"
    alice = _signed_in(console_client, failing, ALICE)
    vic = _signed_in(console_client, failing, VIC)
    page = alice.page(f"/runs/{run_id}").text
    assert _buttons(page) == {"retry"}
    assert _buttons(vic.page(f"/runs/{run_id}").text) == set()
    refused = vic.http.post(f"/runs/{run_id}/retry", data={"csrf_token": vic.csrf()})
    assert refused.status_code == 403
    retried = alice.http.post(f"/runs/{run_id}/retry", data={"csrf_token": alice.csrf()})
    assert retried.status_code == 303, retried.text
    detail = failing.run_detail(run_id)
    audit = detail["metrics_snapshot"].get("audit", [])
    assert [(e["action"], e["principal"]) for e in audit] == [("retry", "alice")]
