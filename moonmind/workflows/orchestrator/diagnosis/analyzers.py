"""One analyzer per failure kind, in priority order, and the operators' own signatures.

``diagnose`` runs them all on one Evidence; the first diagnosis is the primary one (the
cause), the rest are context (e.g. a crash loop around a missing variable).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import cast

from moonmind.workflows.orchestrator.diagnosis import engine, network, runtime
from moonmind.workflows.orchestrator.diagnosis.evidence import Diagnosis, Evidence, Outcome
from moonmind.workflows.orchestrator.diagnosis.signatures import SignatureKind

Analyzer = Callable[[Evidence], Diagnosis | None]


def _sig(kind: SignatureKind) -> Analyzer:
    return cast(Analyzer, runtime.signature_analyzer(kind))


# kind -> analyzer; the order is the priority: causes first, symptoms (loops, checks) last.
ANALYZERS: dict[str, Analyzer] = {
    "entrypoint_missing": engine.entrypoint_missing,
    "exec_format_error": engine.exec_format_error,
    "oom_killed": engine.oom_killed,
    "missing_env_var": runtime.missing_env_var,
    "invalid_config_value": runtime.invalid_config_value,
    "import_name_mismatch": runtime.import_name_mismatch,
    "syntax_error": runtime.syntax_error,
    "python_missing_module": _sig(SignatureKind.PYTHON_MISSING_MODULE),
    "node_missing_module": _sig(SignatureKind.NODE_MISSING_MODULE),
    "missing_shared_library": _sig(SignatureKind.MISSING_SHARED_LIBRARY),
    "command_not_found": _sig(SignatureKind.COMMAND_NOT_FOUND),
    "pip_no_distribution": _sig(SignatureKind.PIP_NO_DISTRIBUTION),
    "missing_file": runtime.missing_file,
    "permission_denied": runtime.permission_denied,
    "read_only_filesystem": runtime.read_only_filesystem,
    "port_in_use": network.port_in_use,
    "connection_refused": network.connection_refused,
    "segfault": engine.segfault,
    "killed_by_signal": engine.killed_by_signal,
    "crash_loop": engine.crash_loop,
    "healthcheck_failing": engine.healthcheck_failing,
}
# build_failed reads a build log, not a container: see build_log.build_failed.
KINDS = (*ANALYZERS, "build_failed")


def _operator(ev: Evidence, signatures: Iterable[Mapping[str, str]]) -> list[Diagnosis]:
    """Signatures from config.toml: a regex on the crash block, a kind, a remediation."""
    found = []
    for sig in signatures:
        m = re.search(sig["pattern"], ev.block, re.M)
        if m is None:
            continue
        subject = next((g for g in m.groups() if g), m.group(0)) if m.groups() else m.group(0)
        line = ev.block[: m.end()].rsplit("\n", 1)[-1] + ev.block[m.end() :].split("\n", 1)[0]
        found.append(Diagnosis(sig["kind"], subject, line.strip(), sig["remediation"]))
    return found


def diagnose(
    ev: Evidence, operator_signatures: Iterable[Mapping[str, str]] = ()
) -> list[Diagnosis]:
    """Every recognised failure, primary first, at most one per kind."""
    found = _operator(ev, operator_signatures)
    for analyzer in ANALYZERS.values():
        diagnosis = analyzer(ev)
        if diagnosis is not None:
            found.append(diagnosis)
    unique: dict[str, Diagnosis] = {}
    for diagnosis in found:
        unique.setdefault(diagnosis.kind, diagnosis)
    return list(unique.values())


def explanation(diagnoses: list[Diagnosis]) -> str:
    """The primary diagnosis said plainly: kind, subject, and what to do."""
    if not diagnoses:
        return "no known failure in the container's state or its last crash block"
    first = diagnoses[0]
    return f"{first.kind} ({first.subject}): {first.remediation}"


def outcome(diagnoses: list[Diagnosis]) -> Outcome | None:
    return diagnoses[0].outcome if diagnoses else None


def suggested_run(diagnoses: list[Diagnosis], service: str) -> dict[str, str] | None:
    """A run for the service the primary diagnosis points at (one click in the API/CLI)."""
    if not diagnoses or diagnoses[0].outcome is not Outcome.OTHER_SERVICE:
        return None
    first = diagnoses[0]
    other = first.other_service
    if not other or other == service:
        return None
    return {
        "target_service": other,
        "instruction": f"{service} fails with {first.kind} ({first.subject}) because of "
        f"{other}: {first.remediation}",
    }
