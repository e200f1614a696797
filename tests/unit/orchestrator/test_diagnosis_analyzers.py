"""Analyzers fed directly: crash blocks, kinds without a container here, operators' signatures."""

from __future__ import annotations

from pathlib import Path

from moonmind.config import load_settings
from moonmind.workflows.orchestrator.diagnosis.analyzers import diagnose, explanation
from moonmind.workflows.orchestrator.diagnosis.build_log import build_failed
from moonmind.workflows.orchestrator.diagnosis.evidence import Evidence, crash_block

DATA = Path(__file__).parent / "data"

OLD_THEN_NEW = """\
Traceback (most recent call last):
  File "/app/warm.py", line 1, in <module>
ModuleNotFoundError: No module named 'yaml'
retrying without the cache
Traceback (most recent call last):
  File "<frozen os>", line 679, in __getitem__
KeyError: 'LEDGER_URL'
"""


def test_crash_block_is_the_last_traceback() -> None:
    block = crash_block(OLD_THEN_NEW)
    assert block.startswith("Traceback")
    assert "yaml" not in block
    kinds = [d.kind for d in diagnose(Evidence(logs=OLD_THEN_NEW, exit_code=1))]
    assert kinds == ["missing_env_var"]


def test_node_missing_module_from_the_crash_block() -> None:
    log = "listening soon\nError: Cannot find module 'express'\nRequire stack:\n- /app/s.js\n"
    found = diagnose(Evidence(logs=log, exit_code=1))
    assert [(d.kind, d.subject, d.outcome) for d in found] == [
        ("node_missing_module", "express", "fix")
    ]


def test_build_failed_names_the_step_of_a_real_legacy_build_log() -> None:
    found = build_failed((DATA / "build_failed_legacy.log").read_text())
    assert found is not None
    assert found.kind == "build_failed"
    assert found.subject == "step 3/4: RUN wget -q http://127.0.0.1:1/nothing && echo done"
    assert "exit 1" in found.remediation


def test_build_failed_on_buildkit_output() -> None:
    log = (
        "#5 [2/3] RUN pip install -r requirements.txt\n"
        "#5 4.2 ERROR: No matching distribution found for ledgerx\n"
        '#5 ERROR: process "/bin/sh -c pip install -r requirements.txt" did not complete '
        "successfully: exit code: 1\n"
    )
    found = build_failed(log)
    assert found is not None
    assert found.subject == "step 2/3: RUN pip install -r requirements.txt"
    assert "pip_no_distribution ledgerx" in found.remediation


def test_operator_signature_from_config_toml(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        "[[orchestrator.signatures]]\n"
        "pattern = 'ledger: shard (\\d+) unavailable'\n"
        'kind = "ledger_shard_down"\n'
        'remediation = "restart the ledger shard named here (runbook 12)"\n'
    )
    settings = load_settings(config)
    sigs = [s.model_dump() for s in settings.signatures]
    found = diagnose(Evidence(logs="boot\nledger: shard 7 unavailable\n", exit_code=3), sigs)
    assert (found[0].kind, found[0].subject) == ("ledger_shard_down", "7")
    assert explanation(found) == (
        "ledger_shard_down (7): restart the ledger shard named here (runbook 12)"
    )
