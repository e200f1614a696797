"""Secrets must never reach artifacts or SSE streams; these pin what is hidden and kept."""

from __future__ import annotations

import pytest

from moonmind.utils.redaction import MASK, Redactor, default_redactor, is_secret_name

PLAIN = Redactor()

# Assembled at runtime so the repository itself holds no token-shaped strings.
GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5" * 4
AWS_KEY_ID = "AKIA" + "IOSFODNN7EXAMPLE"
OPENAI_KEY = "sk-" + "proj_" + "x9Y8z7W6v5" * 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "connecting to amqp://guest:s3cretpw@rabbitmq:5672//",
            "connecting to amqp://guest:***@rabbitmq:5672//",
        ),
        ("redis://:hunter2hunter2@redis:6379/0", "redis://:***@redis:6379/0"),
        ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
        ("Authorization: Bearer abc.def-ghi", "Authorization: Bearer ***"),
        ("authorization: Basic dXNlcjpwYXNz", "authorization: Basic ***"),
        ('-H "Authorization: token abcdef"', '-H "Authorization: token ***"'),
        ("curl -H 'x: Bearer abcdefghijklmnopqrstuvwxyz'", "curl -H 'x: Bearer ***'"),
        ("password=hunter22 next", "password=*** next"),
        ("DB_PASSWD=abc --opt", "DB_PASSWD=*** --opt"),
        ("GITHUB_TOKEN: abc123xyz", "GITHUB_TOKEN: ***"),
        ("?access_token=abc123&page=2", "?access_token=***&page=2"),
        ('{"client_secret": "v4lue", "n": 1}', '{"client_secret": "***", "n": 1}'),
        ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI", "AWS_SECRET_ACCESS_KEY=***"),
        ("api_key='zzz999'", "api_key='***'"),
        (f"key id {AWS_KEY_ID} used", "key id *** used"),
        (f"push with {GITHUB_TOKEN}", "push with ***"),
        (f"OPENAI={OPENAI_KEY}", "OPENAI=***"),
    ],
)
def test_pattern_redaction(text: str, expected: str) -> None:
    assert PLAIN.redact(text) == expected


def test_private_key_block_is_hidden_whole() -> None:
    body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7"
    text = f"before\n-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----\nafter"
    assert PLAIN.redact(text) == f"before\n{MASK}\nafter"


def test_unterminated_private_key_is_hidden_to_the_end() -> None:
    text = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA"
    assert PLAIN.redact(text) == MASK


@pytest.mark.parametrize(
    "text",
    [
        "Step 3/12 : RUN pip install -r requirements.txt",
        "max_tokens=1024 temperature=0.2",
        "password_file=/run/secrets/db",
        "https://github.com/org/repo.git",
        "the task-runner finished; basic checks passed",
        "",
    ],
)
def test_text_without_secrets_is_unchanged(text: str) -> None:
    redactor = Redactor.from_environ({"GITHUB_TOKEN": "zq7-not-in-text", "DEBUG": "true"})
    assert redactor.redact(text) == text


def test_env_secrets_by_name() -> None:
    env = {
        "GITHUB_TOKEN": "tok-value-1",
        "MOONMIND_DB_PASSWORD": "pw-value-2",
        "SOME_SERVICE_KEY": "keyvalue3",
        "oauth_client": "authvalue4",
        "HOME": "/home/plainvalue",
    }
    redactor = Redactor.from_environ(env)
    text = "tok-value-1 pw-value-2 keyvalue3 authvalue4 /home/plainvalue"
    assert redactor.redact(text) == "*** *** *** *** /home/plainvalue"
    assert redactor.secret_count == 4


def test_env_secrets_from_urls() -> None:
    env = {
        "CELERY_BROKER_URL": "amqp://guest:s3cret@rabbitmq//",
        "MOONMIND_DATABASE_URL": "postgresql://u:p%40ssw0rd@h/db",
        "AUTH_SERVER_URL": "https://auth.example.com/login",
    }
    redactor = Redactor.from_environ(env)
    # Out of URL context the patterns would not catch them; the environment does.
    assert redactor.redact("retrying with s3cret") == "retrying with ***"
    assert redactor.redact("pass p@ssw0rd and p%40ssw0rd") == "pass *** and ***"
    # A URL in a secret-named variable is an endpoint, not a secret.
    assert redactor.redact("GET https://auth.example.com/login") == (
        "GET https://auth.example.com/login"
    )


@pytest.mark.parametrize("value", ["true", "False", "12345678", "3.14159", "abc", "  ", ""])
def test_short_boolean_and_numeric_values_are_not_secrets(value: str) -> None:
    redactor = Redactor.from_environ({"AUTH_ENABLED": value, "TOKEN_TTL": value})
    assert redactor.secret_count == 0
    text = f"flag is {value} and abc stays"
    assert redactor.redact(text) == text


def test_longest_secret_wins_on_overlap() -> None:
    redactor = Redactor.from_environ(
        {"SHORT_TOKEN": "abcdef", "LONG_TOKEN": "abcdefghijkl"},
    )
    assert redactor.redact("x abcdefghijkl y abcdef z") == "x *** y *** z"


def test_extra_secrets_are_taken_as_given() -> None:
    redactor = Redactor.from_environ({}, extra_secrets=["pin42", ""])
    assert redactor.redact("pin42 ok") == "*** ok"


def test_regex_metacharacters_in_secrets_are_literal() -> None:
    redactor = Redactor.from_environ({"APP_SECRET": "a.b*c(d)"})
    assert redactor.redact("a.b*c(d) aXb*c(d)") == "*** aXb*c(d)"


def test_repr_does_not_reveal_secrets() -> None:
    redactor = Redactor.from_environ({"APP_SECRET": "very-secret-value"})
    assert "very-secret-value" not in repr(redactor)


def test_secret_names() -> None:
    for name in ("GITHUB_TOKEN", "db_passwd", "Anthropic_Api_Key", "SSH_KEY", "X_CREDENTIALS"):
        assert is_secret_name(name), name
    for name in ("HOME", "PATH", "KEYBOARD", "MOONMIND_RUN_ID"):
        assert not is_secret_name(name), name


def test_bytes_round_trip_keeps_invalid_utf8() -> None:
    redactor = Redactor.from_environ({"APP_SECRET": "sekrit-value"})
    data = b"\xff\xfe head sekrit-value \xc3\xa9 tail \x80"
    assert redactor.redact_bytes(data) == b"\xff\xfe head *** \xc3\xa9 tail \x80"
    clean = b"\xff no secrets \x80\n"
    assert redactor.redact_bytes(clean) == clean


def test_large_log_is_redacted() -> None:
    redactor = Redactor.from_environ(
        {f"SERVICE_{i}_TOKEN": f"token-value-{i:04d}" for i in range(50)},
    )
    lines = [
        f"#{i} [build 3/7] RUN step {i} token-value-{i % 50:04d} amqp://u:pw{i}@host//"
        for i in range(10_000)
    ]
    redacted = [redactor.redact(line) for line in lines]
    assert len(redacted) == 10_000
    assert all("token-value-" not in line and ":pw" not in line for line in redacted)


def test_default_redactor_uses_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOONMIND_TEST_REDACTION_TOKEN", "env-secret-abc")
    default_redactor.cache_clear()
    try:
        assert default_redactor() is default_redactor()
        assert default_redactor().redact("x env-secret-abc") == "x ***"
    finally:
        default_redactor.cache_clear()
