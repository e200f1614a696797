"""The in-process API's client, shared with the worker-side tests (tests/support/worker_side).

It is built from whichever ``settings`` fixture the test sees: here the contract module's."""

from __future__ import annotations

from tests.support.worker_side import api  # noqa: F401 (a fixture: pytest finds it by name)
