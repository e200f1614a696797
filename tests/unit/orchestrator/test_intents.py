"""Instructions the rules understand without an agent: the parser, then the edits it makes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moonmind.workflows.orchestrator.diagnosis import crash_signatures, derive_rule_edits
from moonmind.workflows.orchestrator.diagnosis.intent_edits import plan_intent
from moonmind.workflows.orchestrator.diagnosis.intents import parse_intent
from moonmind.workflows.orchestrator.diagnosis.signatures import Signature
from moonmind.workflows.orchestrator.diagnosis.target import Target
from moonmind.workflows.orchestrator.enums import StepName
from moonmind.workflows.orchestrator.steps import STEP_FUNCTIONS, StepContext, StepFailed
from tests.support.steps import make_context, service_context

# instruction -> (action, name, value, ecosystem)
UNDERSTOOD = [
    ("add requests", ("add", "requests", "", "")),
    ("please add requests to app", ("add", "requests", "", "")),
    ("remove flask", ("remove", "flask", "", "")),
    ("uninstall flask from the api service", ("remove", "flask", "", "")),
    ("pin flask to 3.0.3", ("pin", "flask", "3.0.3", "")),
    ("pin flask==3.0.3", ("pin", "flask", "3.0.3", "")),
    ("pin setuptools at version 66.1.1", ("pin", "setuptools", "66.1.1", "")),
    ("pin the npm package left-pad to 1.3.0", ("pin", "left-pad", "1.3.0", "node")),
    ("add requests==2.31.0", ("add", "requests", "2.31.0", "")),
    ("install the npm package left-pad@1.3.0", ("add", "left-pad", "1.3.0", "node")),
    ("add @types/node", ("add", "@types/node", "", "")),
    ("add the pip package six", ("add", "six", "", "python")),
    ("add curl to worker", ("add", "curl", "", "")),
    ("install the apt package jq.", ("add", "jq", "", "os")),
    ("set LOG_LEVEL=debug", ("set_env", "LOG_LEVEL", "debug", "")),
    ("set LOG_LEVEL=debug on api", ("set_env", "LOG_LEVEL", "debug", "")),
    ("set LOG_LEVEL to debug", ("set_env", "LOG_LEVEL", "debug", "")),
    ('set env GREETING="hello world"', ("set_env", "GREETING", "hello world", "")),
    ("use python:3.12-slim", ("base_image", "python:3.12-slim", "", "")),
    ("switch to moonmind/python-base:v2", ("base_image", "moonmind/python-base:v2", "", "")),
    ("change the base image to node:20-alpine", ("base_image", "node:20-alpine", "", "")),
    ("set the base image to alpine:3.19", ("base_image", "alpine:3.19", "", "")),
]

# instruction -> a piece of the refusal
REFUSED = [
    ("add it", "names no package"),
    ("add", "names no package"),
    ("remove this please", "names no package"),
    ("add requests and flask", "several names (requests, flask)"),
    ("add requests and remove flask", "several changes asked"),
    ("pin flask to 3.0.3 and 3.0.2", "two versions for flask (3.0.3, 3.0.2)"),
    ("pin flask", "needs a name and a version"),
    ("add foo$bar", "not a valid package name"),
    ("add requests==latest", "not a version number"),
    ("remove flask==3.0", "a removal takes a name"),
    ("set LOG_LEVEL", "no value for LOG_LEVEL"),
    ("set it", "names no variable"),
    ("set LOG_LEVEL=debug and LOG_LEVEL=info", "two values for LOG_LEVEL"),
    ("use another base image", "no image named"),
    ("use python:3.12 or python:3.11 as the base image", "two images"),
]

NOTHING = [
    "fix the missing dependency",
    "add the missing dependency",
    "fix it",
    "make it faster",
    "restart sibling",
    "it will not start",
    "LEDGER_URL=http://ledger:8080 please",
    "the service should use less memory",
    "why?",
    "",
]


@pytest.mark.parametrize(("instruction", "expected"), UNDERSTOOD)
def test_understood(instruction: str, expected: tuple[str, str, str, str]) -> None:
    intent = parse_intent(instruction)
    assert intent is not None
    assert not intent.refused, intent
    assert (intent.action, intent.name, intent.value, intent.ecosystem) == expected
    assert intent.words
    assert intent.words in instruction.replace("  ", " ")


@pytest.mark.parametrize(("instruction", "reason"), REFUSED)
def test_refused(instruction: str, reason: str) -> None:
    intent = parse_intent(instruction)
    assert intent is not None
    assert reason in intent.refused, intent


@pytest.mark.parametrize("instruction", NOTHING)
def test_no_intent(instruction: str) -> None:
    assert parse_intent(instruction) is None


# --------------------------------------------------------------------------- edits

APT_DOCKERFILE = (
    "FROM moonmind/python-base:bookworm\n"
    "WORKDIR /srv\n"
    "COPY requirements.txt .\n"
    "RUN pip install -r requirements.txt\n"
    "ENV LOG_LEVEL=info\n"
    'CMD ["python3", "app.py"]\n'
)


def _tree(root: Path, files: dict[str, str]) -> Target:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return Target(root, "app", "app/Dockerfile")


def _diff(target: Target, instruction: str) -> tuple[list[str], list[str]]:
    """(lines removed, lines added) by the instruction's one edit."""
    planned = plan_intent(instruction, target)
    assert planned is not None
    assert not planned.intent.refused, planned
    [edit] = planned.edits
    old = (target.workspace / edit.path).read_text().splitlines()
    new = edit.new_data.decode().splitlines()
    return [x for x in old if x not in new], [x for x in new if x not in old]


@pytest.fixture
def python_app(tmp_path: Path) -> Target:
    files = {"app/Dockerfile": APT_DOCKERFILE, "app/requirements.txt": "flask\nPyYAML>=6\n"}
    return _tree(tmp_path, files)


def test_python_add_remove_pin(python_app: Target) -> None:
    assert _diff(python_app, "add requests") == ([], ["requests"])
    assert _diff(python_app, "remove flask") == (["flask"], [])
    assert _diff(python_app, "pin pyyaml to 6.0.1") == (["PyYAML>=6"], ["PyYAML==6.0.1"])
    assert _diff(python_app, "add six==1.16.0") == ([], ["six==1.16.0"])
    planned = plan_intent("add requests", python_app)
    assert planned is not None
    assert planned.edits[0].unpinned == "python"
    assert planned.record()["ecosystem"] == "python"


def test_os_package_goes_to_the_dockerfile(python_app: Target) -> None:
    removed, added = _diff(python_app, "add curl")
    assert removed == []
    assert added == [
        "RUN apt-get update && apt-get install -y --no-install-recommends curl "
        "&& rm -rf /var/lib/apt/lists/*"
    ]
    dockerfile = python_app.workspace / "app/Dockerfile"
    dockerfile.write_text(
        APT_DOCKERFILE.replace(
            "WORKDIR /srv\n",
            "RUN apt-get update \\\n    && apt-get install -y --no-install-recommends jq \\\n"
            "    && rm -rf /var/lib/apt/lists/*\n",
        )
    )
    assert _diff(python_app, "add curl") == (
        ["    && apt-get install -y --no-install-recommends jq \\"],
        ["    && apt-get install -y --no-install-recommends curl jq \\"],
    )
    dockerfile.write_text("FROM alpine:3.19\nRUN apk add --no-cache bash\n")
    assert _diff(python_app, "add the os package tini") == (
        ["RUN apk add --no-cache bash"],
        ["RUN apk add --no-cache tini bash"],
    )


def test_env_and_base_image(python_app: Target) -> None:
    assert _diff(python_app, "set LOG_LEVEL=debug") == (
        ["ENV LOG_LEVEL=info"],
        ['ENV LOG_LEVEL="debug"'],
    )
    assert _diff(python_app, "set GREETING to hi") == ([], ['ENV GREETING="hi"'])
    assert _diff(python_app, "use moonmind/python-base:v2") == (
        ["FROM moonmind/python-base:bookworm"],
        ["FROM moonmind/python-base:v2"],
    )
    dockerfile = python_app.workspace / "app/Dockerfile"
    dockerfile.write_text(
        "FROM python:3.11 AS build\nRUN true\nFROM python:3.11-slim\nCOPY --from=build / /\n"
    )
    assert _diff(python_app, "use python:3.12-slim") == (
        ["FROM python:3.11-slim"],
        ["FROM python:3.12-slim"],
    )
    dockerfile.write_text("FROM python:3.11 AS build\nFROM build\n")
    assert _diff(python_app, "use python:3.12") == (
        ["FROM python:3.11 AS build"],
        ["FROM python:3.12 AS build"],
    )
    dockerfile.write_text("ARG BASE=python:3.11\nFROM ${BASE}\n")
    planned = plan_intent("use python:3.12", python_app)
    assert planned is not None
    assert "does not name an image" in planned.intent.refused


def test_node_manifest(tmp_path: Path) -> None:
    package = {"name": "web", "dependencies": {"express": "^4.18.0"}}
    target = _tree(
        tmp_path,
        {
            "app/Dockerfile": "FROM moonmind/node-base:bookworm\nCOPY package.json .\n",
            "app/package.json": json.dumps(package, indent=2) + "\n",
        },
    )
    assert _diff(target, "add left-pad") == (
        ['    "express": "^4.18.0"'],
        ['    "express": "^4.18.0",', '    "left-pad": "latest"'],
    )
    assert _diff(target, "pin express to 4.19.2") == (
        ['    "express": "^4.18.0"'],
        ['    "express": "4.19.2"'],
    )
    planned = plan_intent("add left-pad", target)
    assert planned is not None
    assert planned.edits[0].unpinned == "node"
    removed, added = _diff(target, "remove express")
    assert '    "express": "^4.18.0"' in removed
    assert added == ['  "dependencies": {}']


@pytest.mark.parametrize(
    ("files", "instruction", "reason"),
    [
        (
            {"app/requirements.txt": "flask\n", "app/package.json": "{}\n"},
            "add left-pad",
            "both a requirements file and package.json",
        ),
        ({"app/requirements.txt": "flask\n"}, "add flask", "already listed"),
        ({"app/requirements.txt": "flask\n"}, "remove django", "not listed"),
        ({}, "remove flask", "no requirements file or package.json"),
        ({"app/requirements.txt": "x\n"}, "use moonmind/python-base:bookworm", "already uses"),
        ({"app/requirements.txt": "x\n"}, "set LOG_LEVEL=info", "already sets LOG_LEVEL"),
    ],
)
def test_refused_on_the_files(
    tmp_path: Path, files: dict[str, str], instruction: str, reason: str
) -> None:
    target = _tree(tmp_path, {"app/Dockerfile": APT_DOCKERFILE, **files})
    planned = plan_intent(instruction, target)
    assert planned is not None
    assert planned.edits == []
    assert reason in planned.intent.refused, planned.intent


def test_a_recognised_intent_wins_and_a_refused_one_changes_nothing(python_app: Target) -> None:
    missing = [Signature("python_missing_module", "requests", "ModuleNotFoundError: ...")]

    def edits(instruction: str) -> list[str]:
        found = derive_rule_edits(
            missing,
            workspace=python_app.workspace,
            build_context="app",
            dockerfile="app/Dockerfile",
            instruction=instruction,
        )
        return [edit.path for edit in found]

    assert edits("add it") == []
    assert edits("set A=1") == ["app/Dockerfile"]
    assert edits("fix it") == ["app/requirements.txt"]  # no intent: the signature's rule


# --------------------------------------------------------------------------- safe guesses


def test_an_unknown_distribution_is_marked_a_guess(python_app: Target) -> None:
    known, guessed = (
        derive_rule_edits(
            [Signature("python_missing_module", module, "ModuleNotFoundError")],
            workspace=python_app.workspace,
            build_context="app",
            dockerfile="app/Dockerfile",
        )[0]
        for module in ("bs4", "frobnicator")
    )
    assert known.guess == ""
    assert known.package == "beautifulsoup4"
    assert "not in the known import-to-distribution table" in guessed.guess
    assert guessed.reason.endswith("(a guess)")
    assert guessed.unpinned == "python"


TRACEBACK = """\
Traceback (most recent call last):
  File "/srv/app.py", line 3, in <module>
    print("ModuleNotFoundError: No module named 'evil'")
ZeroDivisionError: division by zero
"""


@pytest.mark.parametrize(
    "block",
    [
        TRACEBACK,  # the planted text is a source line of the traceback
        TRACEBACK + "ModuleNotFoundError: No module named 'evil'\n",  # stdout flushed at exit
        "Error: cannot connect\nModuleNotFoundError: No module named 'evil' (just a log)\n"
        "Error: giving up\n",
    ],
)
def test_planted_module_names_are_not_signatures(block: str) -> None:
    assert [s.subject for s in crash_signatures(block)] == []


def test_the_crash_line_is_a_signature() -> None:
    real = TRACEBACK.replace(
        "ZeroDivisionError: division by zero", "ModuleNotFoundError: No module named 'yaml'"
    )
    assert [s.subject for s in crash_signatures(real)] == ["yaml"]
    assert [s.subject for s in crash_signatures("sh: 1: curl: not found\n")] == ["curl"]


# --------------------------------------------------------------------------- the patch step


def _patch_context(root: Path, analysis: dict[str, object], instruction: str) -> StepContext:
    ws = root / "ws"
    for rel, text in {
        "docker-compose.yaml": "services:\n  app:\n    build: app\n",
        "app/Dockerfile": APT_DOCKERFILE,
        "app/requirements.txt": "flask\n",
    }.items():
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_text(text)
    ctx = make_context(root, service=service_context(ws))
    ctx.instruction = instruction
    ctx.plan.step(StepName.ANALYZE).result = {"analysis": analysis}
    return ctx


def test_a_guess_is_named_in_the_result_the_message_and_the_diff(tmp_path: Path) -> None:
    signature = {"kind": "python_missing_module", "subject": "frobnicator", "line": "x"}
    ctx = _patch_context(tmp_path, {"signatures": [signature]}, "fix it")
    outcome = STEP_FUNCTIONS[StepName.PATCH](ctx)
    assert [g["package"] for g in outcome.result["guesses"]] == ["frobnicator"]
    assert outcome.result["unpinned"] == [
        {"path": "app/requirements.txt", "package": "frobnicator", "ecosystem": "python"}
    ]
    assert "(a guess: approve or correct it)" in outcome.message
    diff = (ctx.store.run_dir(ctx.run_id) / "patch.diff").read_text()
    assert diff.startswith("moonmind: add frobnicator for missing Python module")
    assert "moonmind: GUESS frobnicator: 'frobnicator' is not in the known" in diff
    assert "+frobnicator\n" in diff


def test_a_refused_instruction_says_why_and_what_to_do(tmp_path: Path) -> None:
    intent = plan_intent("add it", Target(tmp_path, "app", "app/Dockerfile"))
    assert intent is not None
    ctx = _patch_context(tmp_path, {"intent": intent.record()}, "add it")
    with pytest.raises(StepFailed) as failed:
        STEP_FUNCTIONS[StepName.PATCH](ctx)
    message = failed.value.message
    assert "the instruction 'add it' was not applied: 'add it' names no package" in message
    assert "pass a patch" in message
    assert "configure an agent (ORCHESTRATOR_PATCH_AGENT)" in message
    assert (ctx.workspace / "app/requirements.txt").read_text() == "flask\n"
