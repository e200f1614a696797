"""`moonmind init`: what it guesses per service and what it refuses to do."""

from __future__ import annotations

import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from moonmind.cli import main
from moonmind.stack_guess import command_port, guess_health, healthcheck_url, published_ports
from moonmind.stack_init import InitError, ignore_state_folder, run_init
from moonmind.workflows.orchestrator.service_profiles import load_profiles

COMPOSE = """\
services:
  api:
    build: ./api
    ports: ["127.0.0.1:18311:8080"]
    healthcheck:
      test: ["CMD-SHELL", "curl -fsS http://localhost:8080/ready || exit 1"]
  worker:
    build:
      context: ./worker
    network_mode: host
    environment:
      WORKER_PORT: "18312"
  cache:
    image: moonmind/busybox:1
    command: ["httpd", "-f", "-p", "127.0.0.1:18313"]
    network_mode: host
  lonely:
    image: moonmind/busybox:1
"""


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "Dockerfile").write_text("FROM moonmind/python-base:bookworm\n")
    (tmp_path / "api" / "requirements.txt").write_text("flask\n")
    (tmp_path / "api" / "requirements-dev.txt").write_text("pytest\n")
    (tmp_path / "worker").mkdir()
    (tmp_path / "worker" / "Dockerfile").write_text("FROM moonmind/node-base:bookworm\n")
    (tmp_path / "worker" / "package.json").write_text("{}\n")
    (tmp_path / "docker-compose.yaml").write_text(COMPOSE)
    monkeypatch.delenv("MOONMIND_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _config(root: Path) -> dict[str, dict[str, object]]:
    data = tomllib.loads((root / "config.toml").read_text())
    return dict(data["orchestrator"]["services"])


def test_published_ports_short_and_long_forms() -> None:
    service = {
        "ports": [
            "127.0.0.1:18080:80/tcp",
            "9000:9001",
            "7000",  # not published on a fixed port
            "8000-8002:8000-8002",  # a range names no single health port
            {"target": 5000, "published": "15000"},
            {"target": 6000},
        ]
    }
    assert published_ports(service) == {80: 18080, 9001: 9000, 5000: 15000}


def test_healthcheck_url_and_command_ports() -> None:
    check = {"healthcheck": {"test": ["CMD", "wget", "-qO-", "http://127.0.0.1:3000/live"]}}
    assert healthcheck_url(check) == (3000, "/live")
    assert healthcheck_url({"healthcheck": {"test": "curl -f http://localhost/ || exit 1"}}) == (
        80,
        "/",
    )
    assert command_port({"command": "uvicorn app:app --port 8123"}) == (
        8123,
        "--port 8123 in its command",
    )
    assert command_port({"environment": ["DEBUG=1", "HTTP_PORT=9123"]}) == (
        9123,
        "HTTP_PORT in its environment",
    )
    assert command_port({"command": ["sleep", "3600"]}) is None


def test_health_guess_maps_the_healthcheck_port_to_the_published_one() -> None:
    service = {
        "ports": ["127.0.0.1:18400:8080"],
        "healthcheck": {"test": ["CMD-SHELL", "curl -f http://localhost:8080/ready"]},
    }
    assert guess_health(service, probe=False).url == "http://127.0.0.1:18400/ready"
    host = {"network_mode": "host", "healthcheck": {"test": "curl http://localhost:8125/ok"}}
    assert guess_health(host, probe=False).url == "http://127.0.0.1:8125/ok"
    assert guess_health({"image": "redis"}, probe=False).url is None


class _RootOnly(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def root_only_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RootOnly)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_a_running_service_gets_the_path_it_answers(root_only_server: int) -> None:
    service = {"ports": [f"127.0.0.1:{root_only_server}:80"]}
    guess = guess_health(service, probe=True)
    assert guess.url == f"http://127.0.0.1:{root_only_server}/"
    assert "/ answered" in guess.reason


def test_init_writes_one_section_per_service(stack: Path) -> None:
    run_init(stack, None, force=False, probe=False)
    text = (stack / "config.toml").read_text()
    services = _config(stack)
    assert set(services) == {"api", "worker", "cache", "lonely"}
    assert services["api"] == {
        "health_url": "http://127.0.0.1:18311/ready",
        "allow": ["api/Dockerfile", "api/requirements*.txt"],
    }
    assert services["worker"] == {
        "health_url": "http://127.0.0.1:18312/health",
        "allow": ["worker/Dockerfile", "worker/package.json"],
    }
    assert services["cache"] == {"health_url": "http://127.0.0.1:18313/health"}
    assert services["lonely"] == {}
    assert text.count("image only (moonmind/busybox:1), cannot be patched") == 2
    assert tomllib.loads(text)["orchestrator"]["compose_file"] == "docker-compose.yaml"
    # The sections are valid overrides for the profiles the orchestrator builds.
    model: dict[str, Any] = {"services": {name: {} for name in services}}
    load_profiles(model, workspace=stack, overrides=services)


def test_init_refuses_to_overwrite_without_force(
    stack: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (stack / "config.toml").write_text("# mine\n")
    with pytest.raises(InitError, match="--force"):
        run_init(stack, None, force=False, probe=False)
    assert main(["init"]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert (stack / "config.toml").read_text() == "# mine\n"
    assert main(["init", "--force"]) == 0
    out = capsys.readouterr().out
    assert "[orchestrator.services.api]" in (stack / "config.toml").read_text()
    assert out.rstrip().endswith("moonmind db upgrade\n  moonmind orchestrator up")


def test_init_names_a_missing_compose_file(stack: Path) -> None:
    with pytest.raises(InitError, match="no such compose file"):
        run_init(stack, "other.yaml", force=False, probe=False)
    (stack / "docker-compose.yaml").rename(stack / "stack.yml")
    with pytest.raises(InitError, match="--compose-file"):
        run_init(stack, None, force=False, probe=False)
    run_init(stack, "stack.yml", force=False, probe=False)
    assert 'compose_file = "stack.yml"' in (stack / "config.toml").read_text()


def test_gitignore_gets_the_state_folder_once(tmp_path: Path) -> None:
    assert ignore_state_folder(tmp_path) is True
    assert (tmp_path / ".gitignore").read_text() == "var/\n"
    assert ignore_state_folder(tmp_path) is False
    assert (tmp_path / ".gitignore").read_text() == "var/\n"
    (tmp_path / ".gitignore").write_text("node_modules/")  # no final newline
    assert ignore_state_folder(tmp_path) is True
    assert (tmp_path / ".gitignore").read_text() == "node_modules/\nvar/\n"
    (tmp_path / ".gitignore").write_text("# var\n/var\n")
    assert ignore_state_folder(tmp_path) is False


def test_init_reads_the_yaml_itself_without_a_compose_cli(
    stack: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_COMPOSE_COMMAND", str(stack / "no-such-compose"))
    run_init(stack, None, force=False, probe=False)
    services = _config(stack)
    assert services["api"]["allow"] == ["api/Dockerfile", "api/requirements*.txt"]
    assert services["worker"]["health_url"] == "http://127.0.0.1:18312/health"
