"""Signature detection and built-in remediation rules on realistic logs and workspaces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moonmind.workflows.orchestrator.diagnosis import (
    FileEdit,
    Signature,
    derive_rule_edits,
    detect_signatures,
    distribution_for_module,
    os_package,
)

PYTHON_LOG = """\
api-1  | Traceback (most recent call last):
api-1  |   File "/app/main.py", line 3, in <module>
api-1  |     import yaml.constructor
api-1  | ModuleNotFoundError: No module named 'yaml.constructor'
api-1 exited with code 1
api-1  | ModuleNotFoundError: No module named 'yaml'
"""

NODE_LOG = """\
web-1  | node:internal/modules/cjs/loader:1080
web-1  |   throw err;
web-1  | Error: Cannot find module './routes/local'
web-1  | Error: Cannot find module 'express'
web-1  | Require stack:
web-1  | - /usr/src/app/server.js
web-1  | Error: Cannot find module '@aws-sdk/client-s3/dist-cjs/index.js'
web-1  | Error [ERR_MODULE_NOT_FOUND]: Cannot find package 'dotenv' imported from /app/a.mjs
"""


def test_python_missing_module_uses_top_level_name() -> None:
    sigs = detect_signatures(PYTHON_LOG)
    assert sigs == [
        Signature(
            "python_missing_module",
            "yaml",
            "api-1  | ModuleNotFoundError: No module named 'yaml.constructor'",
        )
    ]


def test_python2_style_import_error() -> None:
    sigs = detect_signatures("ImportError: No module named requests.adapters\n")
    assert [(s.kind, s.subject) for s in sigs] == [("python_missing_module", "requests")]


def test_node_missing_modules_skip_relative_paths() -> None:
    sigs = detect_signatures(NODE_LOG)
    assert [(s.kind, s.subject) for s in sigs] == [
        ("node_missing_module", "express"),
        ("node_missing_module", "@aws-sdk/client-s3"),
        ("node_missing_module", "dotenv"),
    ]


def test_missing_shared_library() -> None:
    log = (
        "worker-1  | /usr/local/bin/worker: error while loading shared libraries: "
        "libpq.so.5: cannot open shared object file: No such file or directory\n"
    )
    sigs = detect_signatures(log)
    assert [(s.kind, s.subject) for s in sigs] == [("missing_shared_library", "libpq.so.5")]


@pytest.mark.parametrize(
    "line",
    [
        "sh: 1: curl: not found",
        "api-1  | sh: 1: curl: not found",
        "bash: curl: command not found",
        "bash: line 1: curl: command not found",
        "/bin/sh: curl: not found",
        "/bin/sh: 1: /usr/bin/curl: not found",
        "sh: 1: exec: curl: not found",
        "Error response from daemon: failed to create task: OCI runtime create failed: "
        'runc create failed: unable to start container process: exec: "curl": '
        "executable file not found in $PATH: unknown",
    ],
)
def test_command_not_found_variants(line: str) -> None:
    sigs = detect_signatures(f"starting\n{line}\n")
    assert [(s.kind, s.subject) for s in sigs] == [("command_not_found", "curl")]


def test_pip_no_distribution_strips_version() -> None:
    log = (
        "#8 4.210 ERROR: Could not find a version that satisfies the requirement "
        "foo==1.0 (from versions: none)\n"
        "#8 4.211 ERROR: No matching distribution found for foo==1.0\n"
    )
    sigs = detect_signatures(log)
    assert [(s.kind, s.subject) for s in sigs] == [("pip_no_distribution", "foo")]


def test_signatures_are_deduplicated_in_order_and_ansi_is_ignored() -> None:
    log = (
        "\x1b[36mapi-1 |\x1b[0m bash: jq: command not found\n"
        "ModuleNotFoundError: No module named 'PIL'\n"
        "bash: jq: command not found\n"
        "nothing interesting here\n"
    )
    assert [(s.kind, s.subject) for s in detect_signatures(log)] == [
        ("command_not_found", "jq"),
        ("python_missing_module", "PIL"),
    ]


def test_no_signatures_in_clean_log() -> None:
    assert detect_signatures("INFO: Uvicorn running on http://0.0.0.0:8000\n") == []


def test_lookup_tables() -> None:
    assert distribution_for_module("yaml") == "PyYAML"
    assert distribution_for_module("sklearn.linear_model") == "scikit-learn"
    assert distribution_for_module("requests") == "requests"
    assert distribution_for_module("google") is None
    assert distribution_for_module("json") is None
    assert os_package("command_not_found", "ps", "apt") == "procps"
    assert os_package("missing_shared_library", "libGL.so.1", "apk") == "mesa-gl"
    assert os_package("command_not_found", "frobnicate", "apt") is None


# ----------------------------------------------------------------------------- rule edits


def make_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def sig(kind: str, subject: str) -> Signature:
    return Signature(kind, subject, f"{kind}: {subject}")


def edits_for(
    root: Path, *sigs: Signature, context: str = "services/api", dockerfile: str = ""
) -> list[FileEdit]:
    return derive_rule_edits(
        list(sigs),
        workspace=root,
        build_context=context,
        dockerfile=dockerfile or f"{context}/Dockerfile",
    )


COPY_TMP_DOCKERFILE = """\
FROM python:3.11-slim AS base
WORKDIR /srv
COPY requirements.txt /tmp/req.txt
COPY requirements-unused.txt ./
RUN pip install --no-cache-dir \\
    -r /tmp/req.txt
COPY . .
CMD ["python", "main.py"]
"""


def test_requirements_found_through_copy_to_other_path(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path,
        {
            "services/api/Dockerfile": COPY_TMP_DOCKERFILE,
            "services/api/requirements.txt": "fastapi\n",
            "services/api/requirements-unused.txt": "other\n",
        },
    )
    edits = edits_for(root, sig("python_missing_module", "yaml"))
    assert edits == [
        FileEdit(
            "services/api/requirements.txt",
            b"fastapi\nPyYAML\n",
            "add PyYAML for missing Python module 'yaml'",
        )
    ]


def test_requirements_via_workdir_and_copy_dot(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path,
        {
            "app/Dockerfile": (
                "FROM python:3.12\nWORKDIR /code\nCOPY . .\n"
                "RUN apt-get update && pip3 install --requirement=deps/base.txt\n"
            ),
            "app/deps/base.txt": "flask",
            "app/requirements.txt": "unused\n",
        },
    )
    edits = edits_for(root, sig("python_missing_module", "bs4"), context="app")
    assert [(e.path, e.new_data) for e in edits] == [
        ("app/deps/base.txt", b"flask\nbeautifulsoup4\n")
    ]


def test_requirements_fallback_without_dockerfile(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"services/api/requirements.txt": b"a\r\nb"})
    edits = edits_for(root, sig("python_missing_module", "dateutil"))
    assert [e.new_data for e in edits] == [b"a\r\nb\r\npython-dateutil\r\n"]


@pytest.mark.parametrize(
    ("module", "listed"),
    [
        ("yaml", "pyyaml>=6\n"),
        ("yaml", "PyYAML==6.0.1 ; python_version > '3'  # pinned\n"),
        ("yaml", "pyYAML[libyaml]\n"),
        ("yaml", "-r base.txt\n"),
        ("dateutil", "Python_DateUtil==2.9\n"),
    ],
)
def test_already_listed_requirement_is_a_no_op(tmp_path: Path, module: str, listed: str) -> None:
    root = make_tree(
        tmp_path,
        {
            "services/api/requirements.txt": "fastapi\n" + listed,
            "services/api/base.txt": "PyYAML\n",
        },
    )
    assert edits_for(root, sig("python_missing_module", module)) == []


def test_local_package_and_stdlib_get_no_edit(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path,
        {"services/api/requirements.txt": "fastapi\n", "services/api/app/__init__.py": ""},
    )
    assert edits_for(root, sig("python_missing_module", "app")) == []
    assert edits_for(root, sig("python_missing_module", "tomllib")) == []


def test_pip_no_distribution_never_edits(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"services/api/requirements.txt": "foo==1.0\n"})
    assert edits_for(root, sig("pip_no_distribution", "foo")) == []


def test_first_signature_with_an_edit_wins(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path,
        {
            "services/api/requirements.txt": "fastapi\n",
            "services/api/Dockerfile": "FROM python:3.11-slim\n",
        },
    )
    edits = edits_for(
        root,
        sig("pip_no_distribution", "foo"),
        sig("command_not_found", "frobnicate"),
        sig("python_missing_module", "jwt"),
        sig("command_not_found", "curl"),
    )
    assert [e.path for e in edits] == ["services/api/requirements.txt"]
    assert edits[0].new_data.endswith(b"PyJWT\n")


def test_package_json_dependency_keeps_indent_and_order(tmp_path: Path) -> None:
    original = (
        '{\n    "name": "web",\n    "dependencies": {\n        "lodash": "^4.17.21"\n'
        '    },\n    "scripts": {\n        "start": "node server.js"\n    }\n}\n'
    )
    root = make_tree(tmp_path, {"web/package.json": original})
    edits = edits_for(root, sig("node_missing_module", "express"), context="web")
    assert len(edits) == 1
    text = edits[0].new_data.decode()
    assert edits[0].path == "web/package.json"
    assert text == (
        '{\n    "name": "web",\n    "dependencies": {\n        "lodash": "^4.17.21",\n'
        '        "express": "latest"\n    },\n    "scripts": {\n        "start": "node server.js"\n'
        "    }\n}\n"
    )
    assert list(json.loads(text)) == ["name", "dependencies", "scripts"]


def test_package_json_without_dependencies_and_already_present(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"web/package.json": '{"name": "web"}'})
    edits = edits_for(root, sig("node_missing_module", "@scope/pkg"), context="web")
    assert (
        edits[0].new_data
        == b'{\n  "name": "web",\n  "dependencies": {\n    "@scope/pkg": "latest"\n  }\n}'
    )
    (root / "web/package.json").write_text('{"dependencies": {"express": "4"}}\n')
    assert edits_for(root, sig("node_missing_module", "express"), context="web") == []


APT_DOCKERFILE = """\
FROM node:20 AS build
RUN npm ci

FROM python:3.11-slim
WORKDIR /app
CMD ["python", "main.py"]
"""

APK_DOCKERFILE = """\
FROM python:3.11-alpine
COPY . /app
"""


def test_apt_dockerfile_gets_install_after_final_from(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"services/api/Dockerfile": APT_DOCKERFILE})
    edits = edits_for(root, sig("command_not_found", "curl"))
    assert [e.path for e in edits] == ["services/api/Dockerfile"]
    lines = edits[0].new_data.decode().splitlines()
    assert lines[3] == "FROM python:3.11-slim"
    assert lines[4] == (
        "RUN apt-get update && apt-get install -y --no-install-recommends curl "
        "&& rm -rf /var/lib/apt/lists/*"
    )
    assert lines[:3] == APT_DOCKERFILE.splitlines()[:3]
    assert lines[5:] == APT_DOCKERFILE.splitlines()[4:]


def test_shared_library_on_apt_image(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"services/api/Dockerfile": "FROM debian:bookworm\n"})
    edits = edits_for(root, sig("missing_shared_library", "libpq.so.5"))
    assert b"--no-install-recommends libpq5 &&" in edits[0].new_data


def test_apk_dockerfile(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"services/api/Dockerfile": APK_DOCKERFILE})
    edits = edits_for(root, sig("missing_shared_library", "libGL.so.1"))
    assert edits[0].new_data == (
        b"FROM python:3.11-alpine\nRUN apk add --no-cache mesa-gl\nCOPY . /app\n"
    )


def test_apk_detected_from_existing_run_line(tmp_path: Path) -> None:
    dockerfile = "FROM registry.local/base:1\nRUN apk add --no-cache bash\n"
    root = make_tree(tmp_path, {"services/api/Dockerfile": dockerfile})
    edits = edits_for(root, sig("command_not_found", "ps"))
    assert edits[0].new_data.decode().splitlines()[1] == "RUN apk add --no-cache procps"
    assert edits_for(root, sig("command_not_found", "bash")) == []


@pytest.mark.parametrize(
    ("dockerfile", "subject"),
    [
        ("FROM gcr.io/distroless/python3\n", "curl"),
        ("FROM scratch\n", "curl"),
        ("FROM python:3.11-slim\n", "frobnicate"),
        ("FROM python:3.11-slim\n", "libunknown.so.9"),
    ],
)
def test_unknown_base_or_package_gives_no_edit(
    tmp_path: Path, dockerfile: str, subject: str
) -> None:
    root = make_tree(tmp_path, {"services/api/Dockerfile": dockerfile})
    kind = "missing_shared_library" if subject.startswith("lib") else "command_not_found"
    assert edits_for(root, sig(kind, subject)) == []


def test_nothing_applicable_returns_empty(tmp_path: Path) -> None:
    assert edits_for(tmp_path, sig("python_missing_module", "yaml")) == []
    assert edits_for(tmp_path, sig("unknown_kind", "x")) == []
    assert (
        derive_rule_edits([], workspace=tmp_path, build_context=".", dockerfile="Dockerfile") == []
    )


def test_requirements_installed_in_builder_stage(tmp_path: Path) -> None:
    dockerfile = (
        "FROM python:3.11 AS builder\n"
        "COPY requirements/prod.txt /build/\n"
        "RUN pip install --prefix=/install -r /build/prod.txt\n"
        "FROM python:3.11-slim\n"
        "COPY --from=builder /install /usr/local\n"
    )
    root = make_tree(
        tmp_path,
        {
            "svc/Dockerfile": dockerfile,
            "svc/requirements/prod.txt": "django\n",
            "svc/requirements.txt": "decoy\n",
        },
    )
    edits = edits_for(root, sig("python_missing_module", "cv2"), context="svc")
    assert [(e.path, e.new_data) for e in edits] == [
        ("svc/requirements/prod.txt", b"django\nopencv-python\n")
    ]
