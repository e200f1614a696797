"""The orchestrator integration fixtures (a broken demo stack, API + worker) for auth tests."""

from tests.integration.orchestrator.conftest import broken_stack, start_orchestrator

__all__ = ["broken_stack", "start_orchestrator"]
