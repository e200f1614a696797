"""Failure signatures found in service logs and the built-in edits that fix common ones.

Signatures turn noisy container logs into a few facts the analysis and the rules can use.
The rules only cover cases with an obvious, low-risk fix (add a dependency or an OS
package); everything else is left for the coding agent. Apart from reading workspace
files, nothing here has side effects.

One module per rule family: ``signatures`` (log parsing), ``dockerfile`` (instruction
parsing, package manager, COPY tracking), ``python_deps``, ``node_deps``, ``os_packages``,
and ``rules`` which picks the first applicable one.
"""

from moonmind.workflows.orchestrator.diagnosis.dockerfile import PackageManager, package_manager
from moonmind.workflows.orchestrator.diagnosis.os_packages import (
    COMMAND_PACKAGES,
    LIBRARY_PACKAGES,
    os_package,
)
from moonmind.workflows.orchestrator.diagnosis.python_deps import (
    AMBIGUOUS_IMPORTS,
    IMPORT_TO_DISTRIBUTION,
    canonical_name,
    distribution_for_module,
)
from moonmind.workflows.orchestrator.diagnosis.rules import derive_rule_edits
from moonmind.workflows.orchestrator.diagnosis.signatures import (
    Signature,
    SignatureKind,
    crash_signatures,
    detect_signatures,
)
from moonmind.workflows.orchestrator.diagnosis.target import FileEdit

__all__ = [
    "AMBIGUOUS_IMPORTS",
    "COMMAND_PACKAGES",
    "IMPORT_TO_DISTRIBUTION",
    "LIBRARY_PACKAGES",
    "FileEdit",
    "PackageManager",
    "Signature",
    "SignatureKind",
    "canonical_name",
    "crash_signatures",
    "derive_rule_edits",
    "detect_signatures",
    "distribution_for_module",
    "os_package",
    "package_manager",
]
