"""Redaction of output that arrives a line (or a chunk) at a time.

:class:`~moonmind.utils.redaction.Redactor` sees one piece of text. A private key printed
during a build reaches the log as some thirty separate lines, and only the first holds
the ``BEGIN`` marker; a service-account JSON file printed by ``cat`` names itself on its
second line and holds its key further down. :class:`StreamRedactor` keeps that state
between lines: once a block opens, every line up to its end is withheld, and the block
shows in the output as one ``***`` where it began.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from moonmind.utils.redaction import (
    MASK,
    PRIVATE_KEY_BEGIN,
    PRIVATE_KEY_END,
    SERVICE_ACCOUNT_START,
    Redactor,
)

__all__ = ["MAX_BLOCK_LINES", "StreamRedactor", "redact_lines"]

# A block that never ends (a truncated key, a missing brace) stops hiding lines after
# this many, so the rest of a long build log is not lost with it.
MAX_BLOCK_LINES = 400

# Inside a PEM block: base64 (the last word of the line, so prefixes such as BuildKit's
# "#7 0.412 " or a timestamp do not matter), RFC 1421/4880 headers, or blank lines.
_BASE64_WORD = re.compile(r"[A-Za-z0-9+/=]+")
_PREFIX_ONLY = re.compile(r"#?[\d.:,TZ+-]+")
_PEM_HEADER = re.compile(r"\b(?:Proc-Type|DEK-Info|Comment|Version|Hash|Charset|Subject):")
_JSON_END = re.compile(r"\}")

_PEM, _JSON = "pem", "json"


def _key_material(text: str) -> bool:
    """Could this line belong to a PEM body? A long base64 word ends it, or a short one
    (the last line of the body, a PGP checksum "=AbCd") stands alone or carries padding."""
    words = text.split()
    if not words:
        return True
    if _PEM_HEADER.search(text):
        return True
    last = words[-1]
    if _PREFIX_ONLY.fullmatch(last):  # a blank line behind a "#7 0.412" or time prefix
        return True
    if not _BASE64_WORD.fullmatch(last):
        return False
    return len(last) >= 16 or "=" in last or len(words) == 1


class StreamRedactor:
    """Redacts consecutive lines of one stream; ``line`` returns None for a withheld line."""

    __slots__ = ("_block", "_held", "_redactor")

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._block: str | None = None
        self._held = 0

    @property
    def in_block(self) -> bool:
        """Whether the last line left a multi-line secret open."""
        return self._block is not None

    def line(self, text: str) -> str | None:
        """The line as it may be shown, or None when it is part of a hidden block."""
        if self._block is None:
            return self._outside(text)
        self._held += 1
        end = (PRIVATE_KEY_END if self._block == _PEM else _JSON_END).search(text)
        if end is not None:
            self._block = None
            rest = text[end.end() :]
            return self._outside(rest) if rest.strip() else None
        if self._held >= MAX_BLOCK_LINES or (self._block == _PEM and not _key_material(text)):
            self._block = None  # the block was cut short: this line is ordinary output
            return self._outside(text)
        return None

    def _outside(self, text: str) -> str:
        begin = PRIVATE_KEY_BEGIN.search(text) if "BEGIN" in text else None
        if begin is not None and PRIVATE_KEY_END.search(text, begin.end()) is None:
            return self._open(_PEM, text, begin.start())
        start = SERVICE_ACCOUNT_START.search(text) if '"' in text else None
        if start is not None and _JSON_END.search(text, start.end()) is None:
            brace = text.rfind("{", 0, start.start())
            return self._open(_JSON, text, brace if brace >= 0 else start.start())
        return self._redactor.redact(text)

    def _open(self, block: str, text: str, at: int) -> str:
        self._block, self._held = block, 0
        return self._redactor.redact(text[:at]) + MASK


def redact_lines(redactor: Redactor, lines: Iterable[str]) -> list[str]:
    """Whole text given as lines: the lines that may be shown, blocks collapsed."""
    stream = StreamRedactor(redactor)
    return [shown for line in lines if (shown := stream.line(line)) is not None]
