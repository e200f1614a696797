"""Redaction that holds: the known token formats, and multi-line secrets (PEM keys of every
flavour, service-account JSON) hidden as blocks, also when they arrive line by line or in
chunks, the way build, restart and agent output is streamed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from moonmind.utils.redaction import MASK, Redactor
from moonmind.utils.stream_redaction import MAX_BLOCK_LINES, StreamRedactor, redact_lines
from moonmind.workflows.orchestrator.enums import ArtifactType, StepName
from moonmind.workflows.orchestrator.steps.context import StepFailed, StepResult
from tests.support.steps import make_context

PLAIN = Redactor()

# Assembled at run time so the repository holds no token-shaped strings.
B64 = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7"
TOKENS = {
    "github classic": "ghp_" + "Zx9Yw8Vu7T" * 4,
    "github oauth": "gho_" + "Ab1Cd2Ef3G" * 4,
    "github fine-grained": "github_pat_" + "11ABCDEFG0" * 3 + "_" + "q" * 40,
    "aws access key id": "AKIA" + "QYLPMN5HHHFPZAM2",
    "slack bot": "xoxb-" + "1234567890-1234567890123-" + "AbCdEfGhIjKlMnOpQrStUvWx",
    "slack user": "xoxp-" + "1234567890-0987654321-" + "abcdef0123456789",
    "stripe live": "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
    "stripe restricted": "rk_live_" + "51H8xyzABCDEFGhijklmnOP",
    "jwt": "eyJhbGciOiJIUzI1NiJ9." + "eyJzdWIiOiIxMjM0NTY3ODkwIn0." + "dozjgNryP4J3jVmNHl0w5N",
}
IN_CONTEXT = {
    "aws secret access key": (
        "aws_secret_access_key = " + "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    "aws secret in json": (
        '{"SecretAccessKey": "' + "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY" + '"}',
        "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
    ),
    "url with password": (
        "pip install --index-url https://ci:hunter2pw@pypi.corp/simple x",
        "hunter2pw",
    ),
    "authorization bearer": ("Authorization: Bearer abc.def.ghi-jkl", "abc.def.ghi-jkl"),
    "authorization basic": ("authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
    "proxy authorization": ("Proxy-Authorization: Negotiate YIIGhgYJKoZIhvcS", "YIIGhgYJKoZIhvcS"),
}

PEM_FLAVOURS = [
    ("-----BEGIN RSA PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----"),
    ("-----BEGIN EC PRIVATE KEY-----", "-----END EC PRIVATE KEY-----"),
    ("-----BEGIN DSA PRIVATE KEY-----", "-----END DSA PRIVATE KEY-----"),
    ("-----BEGIN PRIVATE KEY-----", "-----END PRIVATE KEY-----"),
    ("-----BEGIN ENCRYPTED PRIVATE KEY-----", "-----END ENCRYPTED PRIVATE KEY-----"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----", "-----END OPENSSH PRIVATE KEY-----"),
    ("-----BEGIN PGP PRIVATE KEY BLOCK-----", "-----END PGP PRIVATE KEY BLOCK-----"),
    ("---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----", "---- END SSH2 ENCRYPTED PRIVATE KEY ----"),
]


def _pem(begin: str, end: str) -> list[str]:
    headers = ["Proc-Type: 4,ENCRYPTED", "DEK-Info: AES-128-CBC,3F17F5316E2BAC89", ""]
    body = [B64[i:] + B64[:i] for i in range(0, 40, 8)] + ["xQ=="]
    return [begin, *(headers if "RSA" in begin else []), *body, end]


def _service_account() -> list[str]:
    key = "\n".join(_pem("-----BEGIN PRIVATE KEY-----", "-----END PRIVATE KEY-----")) + "\n"
    data = {
        "type": "service_account",
        "project_id": "demo-project",
        "private_key_id": "7f3c1b9e2d4a6f8e0c2b4d6f8a0c2e4f6a8b0d2e",
        "private_key": key,
        "client_email": "ci@demo-project.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    return json.dumps(data, indent=2).splitlines()


SECRET_PARTS = [B64[8:40], "xQ==", "7f3c1b9e2d4a6f8e0c2b4d6f8a0c2e4f6a8b0d2e", "ci@demo-project"]


@pytest.mark.parametrize("name", sorted(TOKENS))
def test_known_token_formats(name: str) -> None:
    token = TOKENS[name]
    for text in (token, f"deploying with {token} now", f'TOKEN="{token}"'):
        redacted = PLAIN.redact(text)
        assert token not in redacted, name
        assert MASK in redacted


@pytest.mark.parametrize("name", sorted(IN_CONTEXT))
def test_secrets_found_by_their_context(name: str) -> None:
    text, secret = IN_CONTEXT[name]
    redacted = PLAIN.redact(text)
    assert secret not in redacted
    assert MASK in redacted


@pytest.mark.parametrize(("begin", "end"), PEM_FLAVOURS)
def test_every_pem_flavour_whole_and_streamed(begin: str, end: str) -> None:
    lines = ["Step 4/9 : RUN cat /root/.ssh/id", *_pem(begin, end), "Step 5/9 : COPY . ."]
    whole = PLAIN.redact("\n".join(lines))
    assert whole == f"Step 4/9 : RUN cat /root/.ssh/id\n{MASK}\nStep 5/9 : COPY . ."
    shown = redact_lines(PLAIN, lines)
    assert shown == ["Step 4/9 : RUN cat /root/.ssh/id", MASK, "Step 5/9 : COPY . ."]


def test_a_key_printed_during_a_buildkit_build_is_one_block() -> None:
    begin, end = PEM_FLAVOURS[0]
    lines = [f"#7 0.{n:03d} {line}" for n, line in enumerate(_pem(begin, end))]
    shown = redact_lines(PLAIN, ["#7 [3/4] RUN cat key.pem", *lines, "#7 DONE 0.2s"])
    assert shown == ["#7 [3/4] RUN cat key.pem", f"#7 0.000 {MASK}", "#7 DONE 0.2s"]


def test_service_account_json_whole_and_streamed() -> None:
    lines = ["$ cat sa.json", *_service_account(), "done"]
    whole = PLAIN.redact("\n".join(lines))
    streamed = "\n".join(redact_lines(PLAIN, lines))
    for text in (whole, streamed):
        assert not any(part in text for part in SECRET_PARTS), text
        assert text.startswith("$ cat sa.json\n")
        assert text.endswith("done")
    assert whole == f"$ cat sa.json\n{MASK}\ndone"
    assert streamed == f"$ cat sa.json\n{{\n  {MASK}\ndone"  # the block from its first key
    one_line = json.dumps(json.loads("\n".join(_service_account())))
    assert PLAIN.redact(f"creds {one_line} loaded") == f"creds {MASK} loaded"


def test_truncated_key_stops_hiding_at_ordinary_output() -> None:
    begin, _ = PEM_FLAVOURS[3]
    lines = [begin, B64, B64, "Step 6/9 : RUN make install", "ok."]
    assert redact_lines(PLAIN, lines) == [MASK, "Step 6/9 : RUN make install", "ok."]
    stream = StreamRedactor(PLAIN)
    stream.line(begin)
    hidden = [stream.line(B64) for _ in range(MAX_BLOCK_LINES - 1)]
    assert hidden == [None] * (MAX_BLOCK_LINES - 1)
    assert stream.line(B64) == B64  # the cap: a never-ending block stops hiding
    assert not stream.in_block


def _collector(heard: list[str]) -> Callable[[str, str], None]:
    return lambda step, line: heard.append(line)


def test_chunks_of_lines_in_a_log_written_by_a_step(tmp_path: Path) -> None:
    """A step's log may get a chunk of several lines or one line at a time (the adapters
    cut process output at line ends): the same blocks come out either way."""
    text = "\n".join(["building", *_pem(*PEM_FLAVOURS[5]), *_service_account(), "built"])
    for size in (1, 7, 64, len(text)):
        ctx = make_context(tmp_path / str(size), redactor=PLAIN)
        heard: list[str] = []
        ctx.on_line = _collector(heard)
        pieces = [text[i : i + size] for i in range(0, len(text), size)]
        with ctx.log(StepName.BUILD, "build.log", type=ArtifactType.BUILD_LOG) as out:
            buffered = ""
            for piece in pieces:  # cut anywhere, then handed over at line ends
                buffered += piece
                *complete, buffered = buffered.split("\n")
                if complete:
                    out("\n".join(complete))
            out(buffered)
        on_disk = (ctx.store.run_dir(ctx.run_id) / "build.log").read_text()
        expected = ["building", MASK, "{", f"  {MASK}", "built"]
        assert on_disk.splitlines() == expected, size
        assert heard == expected


def test_step_messages_pass_the_redactor(monkeypatch: pytest.MonkeyPatch) -> None:
    token = TOKENS["github classic"]
    assert token not in StepResult(f"pushed with {token}").message
    failed = StepFailed(f"login failed: https://u:pw123456@registry.local/v2 {token}")
    assert token not in failed.message
    assert "pw123456" not in failed.message
    assert token not in str(failed)
