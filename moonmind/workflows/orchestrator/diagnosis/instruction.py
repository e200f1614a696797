"""Values an operator's instruction gives: a variable's value, a distribution's version.

A rule may only use what the operator said; these parsers find it or return None, so an
instruction that does not say the value leaves the failure explained, not guessed.
"""

from __future__ import annotations

import re

_VALUE = r"(\"[^\"\n]*\"|'[^'\n]*'|[^\s\"',;]+)"
_VERSION = r"v?(\d+(?:\.\d+)*(?:[a-z]+\d*)?(?:\.post\d+)?)"


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value.rstrip(".")


def env_value(instruction: str, name: str) -> str | None:
    """``NAME=value``, ``set NAME to value`` or ``NAME: value`` in the instruction."""
    key = re.escape(name)
    patterns = (
        rf"(?<![\w$]){key}\s*=\s*{_VALUE}",
        rf"(?i:set|use|default)\s+`?{key}`?\s+(?i:to|as|=)\s+{_VALUE}",
        rf"(?<![\w$]){key}\s*:\s+{_VALUE}",
    )
    for pattern in patterns:
        m = re.search(pattern, instruction)
        if m:
            value = _unquote(m.group(1))
            return value if value and value.isprintable() else None
    return None


def pinned_version(instruction: str, distribution: str) -> str | None:
    """``dist==1.2.3`` or ``pin dist to 1.2.3`` (names compared as PEP 503 does)."""
    name = re.sub(r"[-_.]+", "[-_.]+", re.escape(distribution).replace("\\-", "-"))
    patterns = (
        rf"(?i)(?<![\w.-]){name}\s*==\s*{_VERSION}\b",
        rf"(?i)\bpin\s+{name}\s+(?:to\s+|at\s+)?(?:version\s+)?{_VERSION}\b",
    )
    for pattern in patterns:
        m = re.search(pattern, instruction)
        if m:
            return m.group(1)
    return None
