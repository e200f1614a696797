"""The console's fixtures: one real API (and worker, when a test needs one) per module.

`launch` starts the processes for a copy of the demo stack with a given config.toml;
`ConsoleClient` is a cookie-keeping httpx client that signs in like a browser would.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.integration.orchestrator.conftest import Launches, Orchestrator, remove_stack
from tests.support.auth import Caller
from tests.support.processes import start_api
from tests.support.stack import Stack, make_stack

Launcher = Callable[..., Orchestrator]


@pytest.fixture(scope="module")
def console_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A copy of the demo stack (built and started only by tests that call bring_up)."""
    root = tmp_path_factory.mktemp("console") / "workspace"
    stack = make_stack(root, project=f"mmconsole{uuid.uuid4().hex[:8]}")
    try:
        yield stack
    finally:
        remove_stack(stack)


@pytest.fixture(scope="module")
def launch(
    migrated_postgres: str, amqp_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Launcher]:
    """Start an API (and optionally a worker) for a stack with the given config.toml."""
    launches = Launches(migrated_postgres, amqp_url)

    def _launch(
        stack: Stack,
        config: str,
        *,
        worker: bool = False,
        embedded: bool = False,
        worker_env: dict[str, str] | None = None,
    ) -> Orchestrator:
        home = tmp_path_factory.mktemp("console-home")
        (home / "config.toml").write_text(config)
        env = launches.env(stack, home / "config.toml", home / "artifacts")
        if embedded:  # the defaults: SQLite and the filesystem broker under <home>/var
            for key in ("MOONMIND_DATABASE_URL", "CELERY_BROKER_URL"):
                env.pop(key)
        api, base = start_api(env, home)
        orchestrator = Orchestrator(
            base, home / "artifacts", api, {**env, **(worker_env or {})}, home
        )
        launches.started.append(orchestrator)
        if worker:
            orchestrator.start_worker()
        return orchestrator

    yield _launch
    launches.stop_all()


CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class ConsoleClient:
    """A browser-like client of the console: keeps its cookies, follows no redirect."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30, follow_redirects=False)

    def close(self) -> None:
        self.http.close()

    def sign_in(self, caller: Caller) -> httpx.Response:
        form = self.http.get("/signin")
        assert form.status_code == 200, form.text
        nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
        assert nonce is not None
        return self.http.post("/signin", data={"token": caller.token, "nonce": nonce.group(1)})

    def page(self, path: str) -> httpx.Response:
        response = self.http.get(path)
        assert response.status_code == 200, (response.status_code, response.text[:500])
        return response

    def csrf(self, path: str = "/") -> str:
        found = CSRF.search(self.page(path).text)
        assert found is not None, "no form with a CSRF token on the page"
        return found.group(1)


def set_cookie_headers(response: httpx.Response, name: str) -> list[str]:
    return [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]


@pytest.fixture
def console_client() -> Iterator[Callable[[str], ConsoleClient]]:
    made: list[ConsoleClient] = []

    def _make(base_url: str) -> ConsoleClient:
        made.append(ConsoleClient(base_url))
        return made[-1]

    yield _make
    for client in made:
        client.close()
