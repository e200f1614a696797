"""The patch step's scope (allow-list minus the orchestrator's own state) and its contained
agent (minimal environment, exit code, pre-images journaled before it starts).

Real files, real git repositories and real agent subprocesses; the step functions are
called the way the worker calls them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from moonmind.config import Settings, SettingsError, load_settings
from moonmind.workflows.orchestrator.adapters.agent import agent_environment
from moonmind.workflows.orchestrator.adapters.workspace import Scope, Snapshot
from moonmind.workflows.orchestrator.state_paths import orchestrator_state
from moonmind.workflows.orchestrator.steps import StepContext, StepFailed, preimages
from moonmind.workflows.orchestrator.steps.patch import patch
from tests.support.steps import make_context, service_context

FILES = {
    "docker-compose.yaml": "services:\n  app:\n    build: app\n  other:\n    build: other\n",
    "ops-stack.yml": "services:\n  app:\n    build: app\n",
    "app/Dockerfile": 'FROM scratch\nCMD ["run"]\n',
    "app/requirements.txt": "requests\n",
    "other/Dockerfile": "FROM scratch\n",
    "var/orchestrator.db": "not really sqlite\n",
}
APP_ALLOW = ("app/Dockerfile", "app/requirements*.txt")


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, timeout=30)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    for rel, text in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@e.invalid", "commit", "-q", "-m", "x")
    return root


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file below root, .git and var/ included."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _agent_ctx(ws: Path, script: str, allow: tuple[str, ...] = APP_ALLOW) -> StepContext:
    path = ws.parent / "agent.py"
    path.write_text(script)
    template = f"{shlex.quote(sys.executable)} {shlex.quote(str(path))} {{workspace}}"
    service = service_context(ws, allow=allow)
    return make_context(ws, service=service, agent_template=template, artifacts=ws / "var/art")


# ----------------------------------------------------------------------------- scope


def test_a_scoped_snapshot_reads_the_allow_list_and_never_the_orchestrators_state(
    ws: Path,
) -> None:
    (ws / "var" / "art" / "run" / "pre-images").mkdir(parents=True)
    (ws / "var" / "art" / "run" / "pre-images" / "manifest.json").write_text("{}")
    everything = Snapshot.take(ws, Scope(("**",), (ws / "var", ws.parent / "elsewhere")))
    assert set(everything.files) == set(FILES) - {"var/orchestrator.db"}
    assert "app" in everything.dirs
    assert "var" not in everything.dirs
    app_only = Snapshot.take(ws, Scope(APP_ALLOW, ()))
    assert set(app_only.files) == {"app/Dockerfile", "app/requirements.txt"}
    assert {"app", "other", "var"} <= app_only.dirs  # directories are all listed
    # Without a scope, a snapshot still reads everything (but .git).
    assert set(Snapshot.take(ws).files) >= set(FILES) | {"var/art/run/pre-images/manifest.json"}


def test_orchestrator_state_names_every_file_it_keeps(tmp_path: Path) -> None:
    settings = Settings(
        database_url="sqlite:///var/orchestrator.db",
        broker_folder="var/celery",
        artifact_root=tmp_path / "arts",
    )
    found = set(orchestrator_state(settings, cwd=tmp_path))
    real = tmp_path.resolve()
    assert {
        real / "arts",
        real / "var" / "orchestrator.db",
        real / "var" / "orchestrator.db-wal",
        real / "var" / "celery",
        real / "var",
    } <= found
    on_postgres = Settings(database_url="postgresql://u@127.0.0.1/db", broker_folder="/q")
    assert not any(p.name.startswith("orchestrator.db") for p in orchestrator_state(on_postgres))
    assert Path("/q") in orchestrator_state(on_postgres)


def test_state_and_pre_images_inside_the_workspace_are_never_part_of_the_patch(ws: Path) -> None:
    """The README's defaults: artifacts under the workspace's var/, and an allow-list of all."""
    diff = (
        "--- a/app/requirements.txt\n+++ b/app/requirements.txt\n"
        "@@ -1 +1,2 @@\n requests\n+PyYAML\n"
    )
    ctx = make_context(
        ws,
        service=service_context(ws, allow=("**",)),
        requested_patch=diff,
        artifacts=ws / "var" / "artifacts" / "spec_workflows",
    )
    result = patch(ctx)
    assert [f["path"] for f in result.result["files"]] == ["app/requirements.txt"]
    assert (ws / "var/artifacts/spec_workflows" / str(ctx.run_id) / "pre-images").is_dir()
    assert set(preimages.manifest(ctx)) == {"app/requirements.txt"}


def test_a_custom_named_compose_file_is_never_patchable(ws: Path) -> None:
    service = service_context(ws, allow=("**",)).model_copy(
        update={"compose_file": str(ws / "ops-stack.yml")}
    )
    diff = (
        "--- a/ops-stack.yml\n+++ b/ops-stack.yml\n@@ -1,3 +1,4 @@\n services:\n"
        "   app:\n     build: app\n+    privileged: true\n"
    )
    before = tree_digest(ws)
    ctx = make_context(ws, service=service, requested_patch=diff, artifacts=ws.parent / "a")
    with pytest.raises(StepFailed, match="ops-stack.yml .compose files are never edited"):
        patch(ctx)
    assert tree_digest(ws) == before


# ----------------------------------------------------------------------------- the agent


def test_agent_environment_is_minimal() -> None:
    worker = {
        "PATH": "/usr/bin",
        "HOME": "/home/w",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "OPENAI_API_KEY": "sk-x",
        "MOONMIND_DATABASE_URL": "postgresql://u:pw@db/x",
        "CELERY_BROKER_URL": "amqp://guest:guest@mq//",
        "DOCKER_HOST": "tcp://docker:2375",
        "MOONMIND_API_TOKEN": "t0k3n",
        "AWS_SECRET_ACCESS_KEY": "aws",
    }
    env = agent_environment(worker, ["OPENAI_API_KEY", "MOONMIND_DATABASE_URL", "DOCKER_HOST"])
    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/home/w",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "OPENAI_API_KEY": "sk-x",
    }


@pytest.mark.parametrize("name", ["MOONMIND_DATABASE_URL", "celery_broker_url", "DOCKER_HOST"])
def test_the_setting_refuses_the_orchestrators_own_variables(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[orchestrator]\npatch_agent_env = ["OPENAI_API_KEY", "{name}"]\n')
    monkeypatch.delenv("ORCHESTRATOR_PATCH_AGENT_ENV", raising=False)
    with pytest.raises(SettingsError, match="ORCHESTRATOR_PATCH_AGENT_ENV"):
        load_settings(config)
    config.write_text('[orchestrator]\npatch_agent_env = ["OPENAI_API_KEY"]\n')
    assert load_settings(config).patch_agent_env == ("OPENAI_API_KEY",)


EDIT_THEN_FAIL = """\
import sys
from pathlib import Path
ws = Path(sys.argv[1])
with open(ws / "app" / "Dockerfile", "a") as fh:
    fh.write("ENV HALF=done\\n")
(ws / "app" / "requirements-dev.txt").write_text("pytest\\n")
sys.exit(1)
"""


def test_an_agent_that_exits_non_zero_fails_the_step_and_changes_nothing(ws: Path) -> None:
    before = tree_digest(ws)
    ctx = _agent_ctx(ws, EDIT_THEN_FAIL)
    with pytest.raises(StepFailed, match="exited with code 1") as failed:
        patch(ctx)
    assert failed.value.rollback is False
    after = {k: v for k, v in tree_digest(ws).items() if not k.startswith("var/art/")}
    assert after == before
    assert not preimages.pending(ctx)  # the step restored it all itself


def test_a_patch_step_delivered_again_after_a_crash_mid_agent_undoes_its_edits(ws: Path) -> None:
    """The journal is written before the agent starts: whatever it left is taken out,
    files it created included, before the next attempt looks at the workspace."""
    before = tree_digest(ws)
    ctx = _agent_ctx(ws, "print('nothing to do this time')\n")
    preimages.journal(ctx, Snapshot.take(ws, Scope(APP_ALLOW, (ws / "var",))))
    journal = json.loads((ws / "var/art" / str(ctx.run_id) / preimages.MANIFEST).read_text())
    assert set(journal) == {"app/Dockerfile", "app/requirements.txt"}
    # What the agent of the attempt that died left behind.
    (ws / "app" / "Dockerfile").write_text("FROM evil\n")
    (ws / "app" / "requirements-dev.txt").write_text("pytest\n")
    with pytest.raises(StepFailed, match="no patch derived"):
        patch(ctx)
    after = {k: v for k, v in tree_digest(ws).items() if not k.startswith("var/art/")}
    assert after == before


EDIT_BOTH = """\
import sys
from pathlib import Path
ws = Path(sys.argv[1])
with open(ws / "app" / "Dockerfile", "a") as fh:
    fh.write("ENV MINE=1\\n")
with open(ws / "other" / "Dockerfile", "a") as fh:
    fh.write("ENV THEIRS=1\\n")
"""


def test_an_edit_outside_the_allow_list_is_put_back(ws: Path) -> None:
    before = tree_digest(ws)
    with pytest.raises(StepFailed, match="other/Dockerfile: path is not allow-listed"):
        patch(_agent_ctx(ws, EDIT_BOTH))
    after = {k: v for k, v in tree_digest(ws).items() if not k.startswith("var/art/")}
    assert after == before


def test_another_runs_edit_is_neither_in_the_diff_nor_put_back(ws: Path) -> None:
    """A run on `other` journaled its scope: its edit (made while this agent ran) is its own."""
    ctx = _agent_ctx(ws, EDIT_BOTH)
    theirs = ctx.store.root / "0" / "pre-images"
    theirs.mkdir(parents=True)
    (theirs / "scope.json").write_text(json.dumps({"allow": ["other/Dockerfile"]}))
    result = patch(ctx)
    assert [f["path"] for f in result.result["files"]] == ["app/Dockerfile"]
    diff = (ctx.store.run_dir(ctx.run_id) / "patch.diff").read_text()
    assert "MINE" in diff
    assert "THEIRS" not in diff
    assert "ENV THEIRS=1" in (ws / "other" / "Dockerfile").read_text()
    # The journal is narrowed to what changed and the scope dropped.
    assert set(preimages.manifest(ctx)) == {"app/Dockerfile"}
    assert json.loads((ctx.store.run_dir(ctx.run_id) / preimages.SCOPE).read_text()) == {}


def test_the_agent_runs_in_the_minimal_environment(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moonmind.config import get_settings

    monkeypatch.setenv("ORCHESTRATOR_PATCH_AGENT_ENV", '["AGENT_VISIBLE"]')
    monkeypatch.setenv("AGENT_VISIBLE", "yes")
    monkeypatch.setenv("MOONMIND_DATABASE_URL", "postgresql://u:pw@127.0.0.1/secret_db")
    monkeypatch.setenv("DOCKER_HOST", "unix:///var/run/secret.sock")
    get_settings.cache_clear()
    try:
        script = (
            "import json, os, sys\n"
            "print(json.dumps(dict(os.environ)))\n"
            "open(os.path.join(sys.argv[1], 'app', 'Dockerfile'), 'a').write('ENV X=1\\n')\n"
        )
        ctx = _agent_ctx(ws, script)
        patch(ctx)
    finally:
        get_settings.cache_clear()
    log = (ctx.store.run_dir(ctx.run_id) / "agent.log").read_text()
    seen = json.loads(log.splitlines()[0])
    assert seen.get("AGENT_VISIBLE") == "yes"
    assert "PATH" in seen
    for hidden in ("MOONMIND_DATABASE_URL", "DOCKER_HOST", "MOONMIND_CONFIG"):
        assert hidden not in seen
    assert os.environ["AGENT_VISIBLE"] == "yes"


EDIT_THEN_HANG = """\
import sys, time
from pathlib import Path
ws = Path(sys.argv[1])
with open(ws / "app" / "Dockerfile", "a") as fh:
    fh.write("ENV HALF=done\\n")
(ws / "app" / "requirements-dev.txt").write_text("pytest\\n")
print("edited", flush=True)
time.sleep(60)
"""


def test_an_agent_that_times_out_fails_the_step_and_changes_nothing(ws: Path) -> None:
    before = tree_digest(ws)
    ctx = _agent_ctx(ws, EDIT_THEN_HANG)
    ctx.agent_timeout_s = 1.0
    with pytest.raises(StepFailed, match="timed out after 1s; its edits were undone"):
        patch(ctx)
    after = {k: v for k, v in tree_digest(ws).items() if not k.startswith("var/art/")}
    assert after == before
    assert "edited" in (ctx.store.run_dir(ctx.run_id) / "agent.log").read_text()


def test_an_old_journal_of_a_run_long_gone_excuses_nothing(ws: Path) -> None:
    before = tree_digest(ws)
    ctx = _agent_ctx(ws, EDIT_BOTH)
    theirs = ctx.store.root / "0" / "pre-images"
    theirs.mkdir(parents=True)
    for name, body in (("scope.json", {"allow": ["other/Dockerfile"]}), ("manifest.json", {})):
        (theirs / name).write_text(json.dumps(body))
        os.utime(theirs / name, (1_000_000_000, 1_000_000_000))
    with pytest.raises(StepFailed, match="other/Dockerfile: path is not allow-listed"):
        patch(ctx)
    after = {k: v for k, v in tree_digest(ws).items() if not k.startswith("var/art/")}
    assert after == before
