"""P2: a fix run whose verify fails, rolled back by the orchestrator, beside the same
rollback done by hand, against the bundled demo stack (issue 9).

The stack starts healthy (PyYAML committed, `app` answering its health URL). The broken
version builds fine but exits at start (an operator patch adding a last CMD to
its Dockerfile), so verify fails on
its first looks. A poller thread asks the health URL every 15 ms and keeps the wall-clock
time of each 200; a side's figure runs from its start to the first 200 after it:

- orchestrator: from verify's end time (the run detail) to the previous version answering;
- by hand: from the same broken state, `docker tag <previous image id> <service image>`
  and `compose up -d --no-deps app`, as a person would type them.

Run alone with `python -m bench.speed_rollback`.
"""

from __future__ import annotations

import difflib
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import httpx

from bench import speed_runs as runs
from bench.speed_report import Line, median
from moonmind.demo import Stack, compose

POLL_S = 0.015
DOCKERFILE = "app/Dockerfile"
BROKEN_LINE = 'CMD ["python3", "-c", "raise SystemExit(\'bench: this version exits at start\')"]'


@dataclass
class Poller:
    """Polls a URL every POLL_S from a thread; keeps the wall-clock times of its 200s."""

    url: str
    oks: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Poller:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        with httpx.Client(timeout=0.5) as client:
            while not self._stop.is_set():
                try:
                    if client.get(self.url).status_code == 200:
                        self.oks.append(time.time())
                except httpx.HTTPError:
                    pass
                self._stop.wait(POLL_S)

    def first_after(self, since: float, timeout: float = 120) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            later = [t for t in list(self.oks) if t > since]
            if later:
                return later[0]
            time.sleep(POLL_S)
        raise TimeoutError(f"{self.url} never answered 200 again")


def _app(stack: Stack) -> Any:
    client = docker.from_env()
    labels = [f"com.docker.compose.project={stack.project}", "com.docker.compose.service=app"]
    found = client.containers.list(all=True, filters={"label": labels})
    client.close()
    assert found, "no app container"
    return found[0]


def _health(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.app_port}/health"


def _wait(predicate: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _answers(stack: Stack) -> bool:
    try:
        return httpx.get(_health(stack), timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr


def make_healthy(stack: Stack) -> None:
    """Commit PyYAML in the requirements (as if fixed earlier), build and bring it up."""
    requirements = stack.root / "app" / "requirements.txt"
    if "PyYAML" not in requirements.read_text():
        requirements.write_text(requirements.read_text() + "PyYAML\n")
        for args in (["add", "-A"], ["commit", "-q", "-m", "fixed earlier"]):
            subprocess.run(["git", *args], cwd=stack.root, check=True, capture_output=True)
    _ok(compose(stack, "build", "app"))
    _ok(compose(stack, "up", "-d"))
    _wait(lambda: _answers(stack), "the healthy app")


def broken_source(stack: Stack) -> str:
    """The Dockerfile with a last CMD that exits at once (an allow-listed file)."""
    return (stack.root / DOCKERFILE).read_text() + BROKEN_LINE + "\n"


def break_patch(stack: Stack) -> str:
    """An operator diff that builds fine and makes `app` exit at start."""
    before = (stack.root / DOCKERFILE).read_text().splitlines(keepends=True)
    after = broken_source(stack).splitlines(keepends=True)
    return "".join(difflib.unified_diff(before, after, f"a/{DOCKERFILE}", f"b/{DOCKERFILE}"))


def _drop_image(image_id: str | None) -> None:
    """Remove a broken image this bench built (untagged once the old one is back)."""
    if not image_id:
        return
    client = docker.from_env()
    try:
        client.images.remove(image_id, noprune=False)
    except docker.errors.APIError:
        pass
    finally:
        client.close()


def by_hand(stack: Stack) -> float:
    """Break it as the run would, then put the previous image back by hand."""
    container = _app(stack)
    image, previous = container.attrs["Config"]["Image"], container.image.id
    (stack.root / DOCKERFILE).write_text(broken_source(stack))
    _ok(compose(stack, "build", "app"))
    _ok(compose(stack, "up", "-d", "--no-deps", "-t", "0", "app"))  # untimed: no stop wait
    _wait(lambda: _app(stack).status == "exited", "the broken app to exit")
    broken = _app(stack).image.id
    with Poller(_health(stack)) as poller:
        began = time.time()
        _ok(subprocess.run(["docker", "tag", previous, image], capture_output=True, text=True))
        _ok(compose(stack, "up", "-d", "--no-deps", "app"))
        answered = poller.first_after(began)
    subprocess.run(["git", "checkout", "--", DOCKERFILE], cwd=stack.root, check=True)
    _drop_image(broken)
    return answered - began


def by_orchestrator(orch: runs.Orchestrator, stack: Stack) -> tuple[float, dict[str, Any]]:
    """(verify's end → previous version answering, per-step timings and rollback.log)."""
    with Poller(_health(stack)) as poller:
        _, run_id = orch.post(
            instruction="apply this", target_service="app", patch=break_patch(stack)
        )
        detail = orch.wait(run_id)
        assert detail["status"] == "rolled_back", detail.get("message")
        steps = {s["name"]: s for s in detail["steps"]}
        failed_at = runs._epoch(steps["verify"]["completed_at"])
        answered = poller.first_after(failed_at)
    log = orch.artifacts / run_id / "rollback.log"
    built = re.findall(
        r"Successfully built (\w+)", (orch.artifacts / run_id / "build.log").read_text()
    )
    _drop_image(built[-1] if built else None)
    data = {
        "steps_s": runs.step_times(detail),
        "verify_to_rollback_start_s": round(
            runs._epoch(steps["rollback"]["started_at"]) - failed_at, 3
        ),
        "rollback_log": log.read_text() if log.exists() else "",
    }
    return answered - failed_at, data


def _drop_rollback_tags(stack: Stack) -> None:
    client = docker.from_env()
    try:
        for image in client.images.list(name=f"moonmind-rollback/{stack.project}-app"):
            for tag in image.tags:  # the image stays while another tag names it
                try:
                    client.images.remove(tag, force=True)
                except docker.errors.APIError:
                    pass
    finally:
        client.close()


def p2(stack: Stack, home: Path, env: dict[str, str]) -> Line:
    make_healthy(stack)
    orch = runs.start(stack, home / "rollback", runs.app_config(stack, 0), env)
    pairs: list[tuple[float, float]] = []
    details: list[dict[str, Any]] = []
    try:
        by_orchestrator(orch, stack)  # warm-up: both sides then build from the same cache
        by_hand(stack)
        for index in range(3):  # interleaved, the order alternating
            if index % 2:
                took, detail = by_orchestrator(orch, stack)
                hand = by_hand(stack)
            else:
                hand = by_hand(stack)
                took, detail = by_orchestrator(orch, stack)
            pairs.append((took, hand))
            details.append(detail)
    finally:
        orch.stop()
        _drop_rollback_tags(stack)
    ratio = median([o / h for o, h in pairs])
    figure = f"{ratio:.2f} (orch {median([o for o, _ in pairs]):.2f}s / hand "
    figure += f"{median([h for _, h in pairs]):.2f}s)"
    data = {"pairs_s": pairs, "runs": details, "poll_s": POLL_S}
    return Line("P2 rollback / by hand (median of 3 pairs)", figure, "<= 1.10", ratio <= 1.10, data)


def main() -> None:
    import json
    import uuid

    from bench.speed import _embedded_env
    from moonmind.demo import make_stack

    home = runs.tmp_home()
    stack = make_stack(home / "workspace", project=f"mmbenchrb{uuid.uuid4().hex[:8]}")
    try:
        line = p2(stack, home, _embedded_env())
    finally:
        runs.cleanup(stack, home)
    print(line.row())
    for run in line.data["runs"]:
        print(json.dumps({k: v for k, v in run.items() if k != "rollback_log"}))
    print(line.data["runs"][-1]["rollback_log"])
    print(json.dumps(line.data["pairs_s"]))


if __name__ == "__main__":
    main()
