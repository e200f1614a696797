"""Throw-away copies of the bundled demo stack for integration tests.

The stack helpers live in moonmind.demo (the demo uses them too); this module gives
tests one import point plus an HTTP wait helper and ways to break the stack's app.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from moonmind.demo import (
    DEMO_STACK,
    REPO_ROOT,
    WHEELHOUSE,
    Stack,
    compose,
    compose_cmd,
    compose_down,
    free_port,
    make_stack,
)

__all__ = [
    "DEMO_STACK",
    "REPO_ROOT",
    "WHEELHOUSE",
    "Stack",
    "compose",
    "compose_cmd",
    "compose_down",
    "free_port",
    "git_commit_all",
    "make_stack",
    "needs_greeting",
    "wait_http",
]


def git_commit_all(root: Path, message: str) -> None:
    subprocess.run(["git", "add", "-A"], cwd=root, check=True, capture_output=True)
    subprocess.run(
        ["git", "commit", "-q", "-m", message], cwd=root, check=True, capture_output=True
    )


def needs_greeting(stack: Stack) -> None:
    """Make the app fail in a way no built-in rule knows (it needs PyYAML and exits without
    a GREETING variable): only a patch agent can fix it. Committed to the stack's repo."""
    app = stack.root / "app"
    (app / "requirements.txt").write_text("PyYAML\n")
    source = (app / "app.py").read_text()
    (app / "app.py").write_text(
        source.replace(
            "import yaml\n",
            "import yaml\n\nif not os.environ.get('GREETING'):\n"
            "    raise SystemExit('environment variable GREETING is not set')\n",
        )
    )
    git_commit_all(stack.root, "needs GREETING")


def wait_http(url: str, timeout: float = 30.0) -> int:
    """Poll url until it answers; the HTTP status, or 0 if it never answered."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (urllib.error.URLError, OSError):
            if time.monotonic() >= deadline:
                return 0
            time.sleep(0.25)
