"""A fix that breaks a service depending on the target rolls the run back (real engine).

The stack: `app` serves its version; `web` depends_on `app` and its health URL answers
200 only while app's /version is the one web was built against. An operator patch that
changes app's version keeps app healthy and breaks web: verify fails, the run rolls back.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.orchestrator.conftest import Orchestrator
from tests.support.stack import Stack, compose, compose_down, free_port, wait_http

pytestmark = pytest.mark.docker

APP = """import os
from http.server import BaseHTTPRequestHandler, HTTPServer

VERSION = os.environ.get("APP_VERSION", "1")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = VERSION.encode() if self.path == "/version" else b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


HTTPServer(("127.0.0.1", int(os.environ["APP_PORT"])), Handler).serve_forever()
"""

WEB = """import os
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer


def app_version():
    try:
        with urllib.request.urlopen(os.environ["APP_URL"], timeout=2) as resp:
            return resp.read().decode()
    except OSError:
        return None


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        ok = app_version() == os.environ["APP_VERSION"]
        body = b"ok" if ok else b"app changed its contract"
        self.send_response(200 if ok else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


HTTPServer(("127.0.0.1", int(os.environ["WEB_PORT"])), Handler).serve_forever()
"""

DOCKERFILE = """FROM moonmind/python-base:bookworm
WORKDIR /srv
COPY main.py .
ENV PYTHONUNBUFFERED=1
CMD ["python3", "main.py"]
"""


def _compose_file(app_port: int, web_port: int) -> str:
    return f"""services:
  app:
    build: ./app
    environment:
      APP_PORT: "{app_port}"
    network_mode: host
    restart: "no"
  web:
    build: ./web
    depends_on:
      - app
    environment:
      WEB_PORT: "{web_port}"
      APP_URL: "http://127.0.0.1:{app_port}/version"
      APP_VERSION: "1"
    network_mode: host
    restart: "no"
"""


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


@pytest.fixture
def dependent_stack(tmp_path: Path) -> Iterator[Stack]:
    """`app` and `web` (depends_on app) built, started and healthy."""
    root = tmp_path / "workspace"
    app_port, web_port = free_port(), free_port()
    for name, code in (("app", APP), ("web", WEB)):
        (root / name).mkdir(parents=True)
        (root / name / "main.py").write_text(code)
        (root / name / "Dockerfile").write_text(DOCKERFILE)
    compose_file = root / "docker-compose.yaml"
    compose_file.write_text(_compose_file(app_port, web_port))
    _git(root, "init", "-q", "-b", "main")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t.invalid", "add", "-A")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-q", "-m", "s")
    stack = Stack(root, compose_file, f"mmdep{uuid.uuid4().hex[:8]}", app_port, web_port)
    try:
        for args in (("build",), ("up", "-d")):
            done = compose(stack, *args)
            assert done.returncode == 0, done.stdout + done.stderr
        assert wait_http(f"http://127.0.0.1:{web_port}/health", timeout=60) == 200
        yield stack
    finally:
        compose_down(stack)


def test_a_fix_that_breaks_a_dependent_rolls_back(
    dependent_stack: Stack, start_orchestrator: Callable[..., Orchestrator]
) -> None:
    stack = dependent_stack
    config = (
        "[orchestrator.services.app]\n"
        f'health_url = "http://127.0.0.1:{stack.app_port}/health"\n'
        "health_timeout_seconds = 60\n"
        "[orchestrator.services.web]\n"
        f'health_url = "http://127.0.0.1:{stack.sibling_port}/health"\n'
    )
    orchestrator = start_orchestrator(stack, config=config)
    patch = (
        "--- a/app/Dockerfile\n+++ b/app/Dockerfile\n@@ -1,2 +1,3 @@\n"
        " FROM moonmind/python-base:bookworm\n+ENV APP_VERSION=2\n WORKDIR /srv\n"
    )
    response = orchestrator.post_run(instruction="bump", target_service="app", patch=patch)
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    detail = orchestrator.wait_terminal(run_id)
    assert detail["status"] == "rolled_back", orchestrator.explain(detail)
    assert "web" in detail["message"], orchestrator.explain(detail)
    analysis = json.loads((orchestrator.artifact_root / run_id / "analysis.json").read_text())
    assert analysis["dependents_before"][0]["name"] == "web"
    assert analysis["dependents_before"][0]["healthy"] is True
    log = (orchestrator.artifact_root / run_id / "verify.log").read_text()
    assert "dependent web: broken" in log
    # The rollback brought app's old image back: web is healthy again.
    assert wait_http(f"http://127.0.0.1:{stack.sibling_port}/health", timeout=30) == 200


def test_a_fix_that_keeps_its_dependents_healthy_succeeds(
    dependent_stack: Stack, start_orchestrator: Callable[..., Orchestrator]
) -> None:
    stack = dependent_stack
    config = (
        "[orchestrator.services.app]\n"
        f'health_url = "http://127.0.0.1:{stack.app_port}/health"\n'
        "[orchestrator.services.web]\n"
        f'health_url = "http://127.0.0.1:{stack.sibling_port}/health"\n'
    )
    orchestrator = start_orchestrator(stack, config=config)
    patch = (
        "--- a/app/Dockerfile\n+++ b/app/Dockerfile\n@@ -1,2 +1,3 @@\n"
        " FROM moonmind/python-base:bookworm\n+ENV UNRELATED=1\n WORKDIR /srv\n"
    )
    response = orchestrator.post_run(instruction="harmless", target_service="app", patch=patch)
    run_id = response.json()["run_id"]
    detail = orchestrator.wait_terminal(run_id)
    assert detail["status"] == "succeeded", orchestrator.explain(detail)
    verify = next(s for s in detail["steps"] if s["name"] == "verify")
    assert "dependents healthy: web" in verify["message"]
