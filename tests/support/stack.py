"""Throw-away copies of the bundled demo stack for integration tests.

The stack helpers live in moonmind.demo (the demo uses them too); this module gives
tests one import point plus an HTTP wait helper.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request

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
    "make_stack",
    "wait_http",
]


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
