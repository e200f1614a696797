"""Redaction of secrets from text before it reaches artifacts, SSE streams or logs.

Build output, restart output, agent output and container logs are stored as audit
artifacts; any secret echoed into them would outlive its rotation. Every line is
passed through a :class:`Redactor`, which hides two kinds of secret:

* values known from the environment (variables whose name looks secret, and
  passwords embedded in URL-valued variables), and
* well-known credential shapes, found by pattern whatever the environment holds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from urllib.parse import unquote

__all__ = [
    "MASK",
    "MIN_SECRET_LENGTH",
    "PRIVATE_KEY_BEGIN",
    "PRIVATE_KEY_END",
    "SERVICE_ACCOUNT_START",
    "Redactor",
    "default_redactor",
    "is_secret_name",
]

MASK = "***"

# Shorter values are too likely to be ordinary words or ids that would blank out
# unrelated text all over the logs.
MIN_SECRET_LENGTH = 6

_SECRET_NAME_MARKERS = (
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "PASS",
    "API_KEY",
    "APIKEY",
    "PRIVATE_KEY",
    "CREDENTIAL",
    "AUTH",
    "ACCESS_KEY",
)

# Values that commonly sit in secret-named flags (e.g. ``AUTH_ENABLED=true``).
_NON_SECRET_VALUES = frozenset(
    {"true", "false", "yes", "no", "on", "off", "none", "null", "nil", "enabled", "disabled"}
)
_NUMBER = re.compile(r"[+-]?\d+(?:[.,_]\d+)*")

# ``scheme://user:password@`` - the password part; user may be empty (``redis://:pw@``).
# Anchored on the literal ``://`` rather than the scheme so the regex engine can skip
# ahead to candidates instead of trying every word.
_URL_CREDENTIALS = re.compile(r"(?P<head>://[^\s:/@'\"]*:)[^\s@/'\"]+(?=@)")

# Every PEM flavour of a private key (PKCS#1 "RSA", "EC", "DSA", PKCS#8 plain and
# "ENCRYPTED", "OPENSSH"), PGP's "PRIVATE KEY BLOCK" and the SSH2 (RFC 4716) "---- BEGIN"
# form; an unterminated block is hidden to the end of the text.
PRIVATE_KEY_BEGIN = re.compile(r"-{4,5} ?BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)? ?-{4,5}")
PRIVATE_KEY_END = re.compile(r"-{4,5} ?END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)? ?-{4,5}")
_PRIVATE_KEY_BLOCK = re.compile(
    f"{PRIVATE_KEY_BEGIN.pattern}.*?(?:{PRIVATE_KEY_END.pattern}|\\Z)", re.DOTALL
)

# A Google service-account key file (or any JSON object holding a "private_key"): the
# whole object, from its brace to its closing brace (or the end of the text).
SERVICE_ACCOUNT_START = re.compile(
    r"\"type\"\s*:\s*\"service_account\"|\"private_key(?:_id)?\"\s*:"
)
_SERVICE_ACCOUNT_JSON = re.compile(
    r"\{[^{}]*(?:" + SERVICE_ACCOUNT_START.pattern + r")[^{}]*(?:\}|\Z)", re.DOTALL
)

_AUTHORIZATION_HEADER = re.compile(
    r"(?P<head>\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?"
    r"(?:(?:bearer|basic|token|digest|negotiate|ntlm|aws4-hmac-sha256|dpop)\s+)?)[^\s\"',]+",
    re.IGNORECASE,
)

# A bare "Bearer <token>" (e.g. in a curl command line); the length floor keeps prose
# such as "bearer authentication" intact.
_BEARER_TOKEN = re.compile(r"(?P<head>\bbearer\s+)[A-Za-z0-9._~+/=-]{20,}", re.IGNORECASE)

# ``password=...``, ``GITHUB_TOKEN: ...``, ``"client_secret": "..."``. The key must end
# at the marker so that ``max_tokens=100`` or ``password_file=/run/x`` stay readable;
# whatever precedes the marker (``GITHUB_``, ``client_``) is left out of the match.
_KEY_VALUE = re.compile(
    r"(?P<head>(?:passw(?:or)?d|token|secret(?:[_-]?key)?|api[_-]?key|apikey|access[_-]?key"
    r"|private[_-]?key|credentials?)"
    r"[\"']?\s*[:=]\s*[\"']?)[^\s\"'&]+",
    re.IGNORECASE,
)

_TOKEN_SHAPES = re.compile(
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"  # AWS access key ids
    r"|\bgh[pousr]_[A-Za-z0-9]{36,}"  # GitHub tokens
    r"|\bgithub_pat_[A-Za-z0-9_]{22,}"  # GitHub fine-grained tokens
    r"|\bsk-[A-Za-z0-9_-]{20,}"  # OpenAI/Anthropic style API keys
    r"|\bxox[abeoprs]-[A-Za-z0-9-]{10,}"  # Slack bot/user/app-level tokens
    r"|\bxapp-\d-[A-Za-z0-9-]{10,}"  # Slack app tokens
    r"|\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe secret and restricted keys
    r"|\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JWTs
)

_HEAD_REPLACEMENT = r"\g<head>" + MASK

# Each rule runs only when one of its lower-case trigger substrings is in the line:
# plain substring tests are far cheaper than case-insensitive regex scans, and most
# build log lines contain none of them.
_RULES: tuple[tuple[tuple[str, ...], re.Pattern[str], str], ...] = (
    (("-----begin", "---- begin"), _PRIVATE_KEY_BLOCK, MASK),
    (("service_account", '"private_key'), _SERVICE_ACCOUNT_JSON, MASK),
    (("://",), _URL_CREDENTIALS, _HEAD_REPLACEMENT),
    (("authorization",), _AUTHORIZATION_HEADER, _HEAD_REPLACEMENT),
    (("bearer",), _BEARER_TOKEN, _HEAD_REPLACEMENT),
    (
        ("pass", "token", "secret", "api", "access", "private", "credential"),
        _KEY_VALUE,
        _HEAD_REPLACEMENT,
    ),
    (
        ("akia", "asia", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "sk-", "xox")
        + ("xapp-", "k_live_", "k_test_", "eyj"),
        _TOKEN_SHAPES,
        MASK,
    ),
)


def is_secret_name(name: str) -> bool:
    """Whether an environment variable's name suggests its value is a secret."""
    upper = name.upper()
    return upper.endswith("_KEY") or any(marker in upper for marker in _SECRET_NAME_MARKERS)


def _is_plausible_secret(value: str) -> bool:
    """Skip values whose redaction would only blank ordinary words and flags."""
    return (
        len(value) >= MIN_SECRET_LENGTH
        and value.lower() not in _NON_SECRET_VALUES
        and _NUMBER.fullmatch(value) is None
    )


def _url_passwords(value: str) -> list[str]:
    """Passwords inside ``scheme://user:password@host`` URLs, raw and percent-decoded."""
    found: list[str] = []
    for match in _URL_CREDENTIALS.finditer(value):
        raw = value[match.end("head") : match.end()]
        found.append(raw)
        decoded = unquote(raw)
        if decoded != raw:
            found.append(decoded)
    return found


class Redactor:
    """Replaces secrets in text with ``***``; cheap enough to run on every log line."""

    __slots__ = ("_known", "_secret_count")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        unique = {secret for secret in secrets if secret}
        self._secret_count = len(unique)
        # Longest first: alternation is leftmost-first, so a secret that contains
        # another must be tried before it or its tail would leak.
        ordered = sorted(unique, key=lambda secret: (-len(secret), secret))
        self._known = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    @classmethod
    def from_environ(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        extra_secrets: Iterable[str] = (),
    ) -> Redactor:
        """Collect secret values from ``environ`` (default ``os.environ``).

        ``extra_secrets`` are taken as given (only empty strings are dropped), since
        the caller knows they are secret.
        """
        env = os.environ if environ is None else environ
        secrets: set[str] = set()
        for name, value in env.items():
            # URL passwords are collected whatever the variable is called
            # (CELERY_BROKER_URL, MOONMIND_DATABASE_URL, ...).
            passwords = _url_passwords(value)
            secrets.update(p for p in passwords if _is_plausible_secret(p))
            if "://" in value:
                # A URL in a secret-named variable (AUTH_URL) is an endpoint; only
                # its embedded password is secret.
                continue
            if is_secret_name(name):
                for candidate in (value, value.strip()):
                    if _is_plausible_secret(candidate):
                        secrets.add(candidate)
        secrets.update(secret for secret in extra_secrets if secret)
        return cls(secrets)

    @property
    def secret_count(self) -> int:
        """How many distinct known values are hidden (never the values themselves)."""
        return self._secret_count

    def __repr__(self) -> str:
        return f"Redactor(secret_count={self._secret_count})"

    def redact(self, text: str) -> str:
        """Return ``text`` with known secret values and credential shapes masked."""
        if self._known is not None:
            text = self._known.sub(MASK, text)
        # A mask never creates a trigger, so triggers found before a substitution
        # are a superset of those after it; one lower-casing serves every rule.
        lowered = text.lower()
        for triggers, pattern, replacement in _RULES:
            for trigger in triggers:
                if trigger in lowered:
                    text = pattern.sub(replacement, text)
                    break
        return text

    def redact_bytes(self, data: bytes) -> bytes:
        """Redact raw process output; undecodable bytes are kept as they were."""
        text = data.decode("utf-8", "surrogateescape")
        redacted = self.redact(text)
        if redacted == text:
            return data
        return redacted.encode("utf-8", "surrogateescape")


@lru_cache(maxsize=1)
def default_redactor() -> Redactor:
    """The redactor for this process's environment, built once.

    Call ``default_redactor.cache_clear()`` after changing ``os.environ``.
    """
    return Redactor.from_environ(os.environ)
