"""The layout rules the architecture doc promises, checked on every test run."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(p for p in (REPO / "moonmind").rglob("*.py") if "migrations" not in p.parts)


def test_no_module_over_the_line_limit() -> None:
    long = {
        str(p.relative_to(REPO)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_function_over_the_line_limit() -> None:
    long = {}
    for path in _modules() + sorted((REPO / "api_service" / "api").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(REPO)}:{node.name}"] = length
    assert long == {}


def test_only_the_worker_entry_point_imports_the_tasks_module() -> None:
    found = subprocess.run(
        ["git", "grep", "-n", r"orchestrator import tasks\|orchestrator.tasks import",
         "moonmind", "api_service"],
        cwd=REPO, capture_output=True, text=True, check=False,
    ).stdout.splitlines()  # fmt: skip
    assert [line.split(":")[0] for line in found] == ["moonmind/cli.py"]


def test_the_data_layer_imports_nothing_of_the_core_but_its_enums() -> None:
    core = "moonmind.workflows.orchestrator"
    for path in sorted((REPO / "api_service" / "db").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(core):
                assert node.module == f"{core}.enums", f"{path}: imports {node.module}"
