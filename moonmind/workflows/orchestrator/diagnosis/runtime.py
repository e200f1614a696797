"""Analyzers that read the crash block of the log: what the process said when it died."""

from __future__ import annotations

import re

from moonmind.workflows.orchestrator.diagnosis.evidence import Diagnosis, Evidence, Outcome
from moonmind.workflows.orchestrator.diagnosis.instruction import env_value, pinned_version
from moonmind.workflows.orchestrator.diagnosis.python_deps import distribution_for_module
from moonmind.workflows.orchestrator.diagnosis.signatures import SignatureKind, crash_signatures

_FIXABLE = {
    SignatureKind.PYTHON_MISSING_MODULE: "add the distribution that provides Python module "
    "'{s}' to the service's requirements (a built-in rule does this when it can)",
    SignatureKind.NODE_MISSING_MODULE: "add npm package '{s}' to the dependencies in "
    "package.json (a built-in rule does this when it can)",
    SignatureKind.MISSING_SHARED_LIBRARY: "install the OS package that provides {s} in the "
    "Dockerfile (a built-in rule does this when it knows the package)",
    SignatureKind.COMMAND_NOT_FOUND: "install the OS package that provides the '{s}' command "
    "in the Dockerfile, or fix the command's name (a built-in rule installs known ones)",
    SignatureKind.PIP_NO_DISTRIBUTION: "no distribution '{s}' exists on the package index "
    "for this Python: correct its name or version in the requirements",
}


def _first(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    """The last match in the block (closest to the crash)."""
    matches = list(pattern.finditer(text))
    return matches[-1] if matches else None


def _line(text: str, match: re.Match[str]) -> str:
    start = text.rfind("\n", 0, match.start()) + 1
    end = text.find("\n", match.end())
    return text[start : end if end >= 0 else len(text)].strip()


def signature_analyzer(kind: SignatureKind) -> object:
    """An analyzer for one of the log signatures the built-in rules know."""

    def analyze(ev: Evidence) -> Diagnosis | None:
        for sig in crash_signatures(ev.block):
            if sig.kind == kind:
                outcome = (
                    Outcome.EXPLAIN if kind is SignatureKind.PIP_NO_DISTRIBUTION else Outcome.FIX
                )
                return Diagnosis(
                    kind, sig.subject, sig.line, _FIXABLE[kind].format(s=sig.subject), outcome
                )
        return None

    analyze.__name__ = f"analyze_{kind.value}"
    return analyze


_IMPORT_NAME = re.compile(r"ImportError: cannot import name '([^']+)' from '([^']+)'")


def import_name_mismatch(ev: Evidence) -> Diagnosis | None:
    m = _first(_IMPORT_NAME, ev.block)
    if m is None:
        return None
    name, module = m.groups()
    dist = distribution_for_module(module)
    version = pinned_version(ev.instruction, dist) if dist else None
    if dist is not None and version is not None:
        return Diagnosis(
            "import_name_mismatch",
            f"{name} from {module}",
            _line(ev.block, m),
            f"the installed {dist} has no '{name}': a rule pins {dist}=={version} (the "
            "version the instruction names) in the requirements",
            Outcome.FIX,
        )
    ask = (
        f"pin {dist} in the requirements to a version that has it (say which in the "
        f"instruction, e.g. '{dist}==X.Y', and a rule pins it), or update the import"
        if dist
        else "it comes with Python or the service itself: update the import or the Python version"
    )
    return Diagnosis(
        "import_name_mismatch",
        f"{name} from {module}",
        _line(ev.block, m),
        f"the installed '{module.split('.')[0]}' has no '{name}': {ask}",
    )


_SYNTAX_FILE = re.compile(r'File "([^"]+)", line (\d+)')
_SYNTAX = re.compile(r"^(?:SyntaxError|IndentationError|TabError): (.+)$", re.M)


def syntax_error(ev: Evidence) -> Diagnosis | None:
    m = _first(_SYNTAX, ev.block)
    if m is None:
        return None
    where = list(_SYNTAX_FILE.finditer(ev.block[: m.start()]))
    subject = f"{where[-1].group(1)}:{where[-1].group(2)}" if where else "unknown file"
    return Diagnosis(
        "syntax_error",
        subject,
        _line(ev.block, m),
        f"fix the syntax error ({m.group(1)}) at {subject} in the service's source",
    )


_ENV_KEYERROR = re.compile(r"^KeyError: '([A-Za-z_][A-Za-z0-9_]*)'", re.M)
_ENV_MESSAGE = re.compile(
    r"(?i)(?:environment variable|env var(?:iable)?)\s+['\"`]?([A-Za-z_][A-Za-z0-9_]*)['\"`]?"
    r"\s+(?:is\s+)?(?:not set|is required|missing|must be set|undefined)"
)


def missing_env_var(ev: Evidence) -> Diagnosis | None:
    key = _first(_ENV_KEYERROR, ev.block)
    environ = key is not None and re.search(r"environ|<frozen os>|os\.py", ev.block)
    m = key if environ else _first(_ENV_MESSAGE, ev.block)
    if m is None:
        return None
    name = m.group(1)
    value = env_value(ev.instruction, name)
    if value is not None:
        return Diagnosis(
            "missing_env_var",
            name,
            _line(ev.block, m),
            f"a rule adds the default ENV {name}={value} (the value the instruction gives) "
            "to the Dockerfile; the compose file's environment still overrides it",
            Outcome.FIX,
        )
    return Diagnosis(
        "missing_env_var",
        name,
        _line(ev.block, m),
        f"set {name} in the compose file's environment for {ev.service or 'the service'} "
        f"(or in its .env file); the orchestrator does not edit those files (or give the "
        f"value in the instruction, '{name}=...', for an ENV default in the Dockerfile)",
    )


_BAD_VALUE = re.compile(
    r"ValueError: (?:invalid literal for (\w+)\(\)(?: with base \d+)?|"
    r"could not convert string to (float)): '([^']*)'"
)


def invalid_config_value(ev: Evidence) -> Diagnosis | None:
    m = _first(_BAD_VALUE, ev.block)
    if m is None:
        return None
    parser = f"{m.group(1) or m.group(2)}()"
    value = m.group(3)
    return Diagnosis(
        "invalid_config_value",
        f"{value!r} for {parser}",
        _line(ev.block, m),
        f"{value!r} is not a valid value for {parser}: correct it where it is configured "
        "(the compose file's environment, .env or a config file)",
    )


_NO_FILE = re.compile(r"(?:FileNotFoundError: )?\[Errno 2\] No such file or directory: '([^']+)'")
_NO_FILE_SHELL = re.compile(r"(?:can't open|cannot open) '?([^\s':]+)'?: No such file or directory")


def missing_file(ev: Evidence) -> Diagnosis | None:
    m = _first(_NO_FILE, ev.block) or _first(_NO_FILE_SHELL, ev.block)
    if m is None:
        return None
    path = m.group(1)
    return Diagnosis(
        "missing_file",
        path,
        _line(ev.block, m),
        f"{path} does not exist in the container: COPY it in the Dockerfile or mount it "
        "in the compose file, or fix the path the service is configured with",
    )


_DENIED = re.compile(r"\[Errno 13\] Permission denied: '([^']+)'|EACCES[^']*'([^']+)'")
_DENIED_SHELL = re.compile(
    r"(?:can't (?:open|create)|cannot (?:open|create)) '?([^\s':]+)'?: Permission denied"
)


def permission_denied(ev: Evidence) -> Diagnosis | None:
    m = _first(_DENIED, ev.block) or _first(_DENIED_SHELL, ev.block)
    if m is None:
        return None
    path = next(g for g in m.groups() if g)
    user = ev.user or "root"
    return Diagnosis(
        "permission_denied",
        f"{path} (user {user})",
        _line(ev.block, m),
        f"user {user} may not access {path}: chown/chmod it in the Dockerfile, or run the "
        "service as a user that may",
    )


_READ_ONLY = re.compile(
    r"\[Errno 30\] Read-only file system: '([^']+)'|EROFS[^']*'([^']+)'"
    r"|([^\s:']+): Read-only file system"
)


def read_only_filesystem(ev: Evidence) -> Diagnosis | None:
    m = _first(_READ_ONLY, ev.block)
    if m is None:
        return None
    path = next((g for g in m.groups() if g), "?")
    return Diagnosis(
        "read_only_filesystem",
        path,
        _line(ev.block, m),
        f"{path} is on a read-only filesystem (read_only: true in the compose file): write "
        "to a tmpfs or volume mounted there, or let the service write elsewhere",
    )
