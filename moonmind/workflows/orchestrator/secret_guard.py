"""Fail closed on a patch that would write a secret into the operator's repository.

Whatever a diff adds is read with the same redactor as logs, line by line and with the
state a multi-line key needs; any added line the redactor would change holds a secret
(a credential shape or a value known from the environment). The refusal names the file
and the line, never the value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from moonmind.utils.redaction import Redactor
from moonmind.utils.stream_redaction import StreamRedactor

_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@")
REMEDIATION = (
    "keep secrets out of the repository: read them from the environment or a compose "
    "secret, and submit the patch without the value"
)


@dataclass(frozen=True)
class AddedSecret:
    path: str
    line: int  # in the new file, 1-based

    def reason(self) -> str:
        return (
            f"patch refused before anything was written: it adds what looks like a secret "
            f"to {self.path} (line {self.line}; the value is not shown); {REMEDIATION}"
        )


def _target(header: str) -> str:
    name = header[4:].split("\t")[0].strip()
    return name[2:] if name.startswith(("a/", "b/")) else name


def find_added_secret(diff: str, redactor: Redactor) -> AddedSecret | None:
    """The first added line of a unified diff that holds a secret, or None."""
    path, line_no = "?", 0
    stream = StreamRedactor(redactor)
    for raw in diff.splitlines():
        if raw.startswith("+++ "):
            path, stream = _target(raw), StreamRedactor(redactor)
            continue
        hunk = _HUNK.match(raw)
        if hunk is not None:
            line_no = int(hunk.group(1))
            continue
        if raw.startswith("+"):
            added = raw[1:]
            if stream.line(added) != added or stream.in_block:
                return AddedSecret(path, line_no)
            line_no += 1
        elif raw.startswith(" "):
            line_no += 1
    return None


def added_lines_diff(path: str, old: bytes | None, new: bytes) -> str:
    """A minimal diff of a whole-file edit (every new line counted as added), enough for
    :func:`find_added_secret` to name the file and line."""
    old_lines = set((old or b"").decode("utf-8", "replace").splitlines())
    body = [f"--- a/{path}", f"+++ b/{path}"]
    for number, text in enumerate(new.decode("utf-8", "replace").splitlines(), start=1):
        if text not in old_lines:
            body += [f"@@ -0,0 +{number},1 @@", f"+{text}"]
    return "\n".join(body) + "\n"


def refusal(diff: str, redactor: Redactor) -> str | None:
    """Why a diff must not be written (it adds a secret), or None."""
    found = find_added_secret(diff, redactor)
    return found.reason() if found is not None else None
