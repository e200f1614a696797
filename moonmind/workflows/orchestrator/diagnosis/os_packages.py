"""OS package rule: install the apt/apk package that provides a missing command or library."""

from __future__ import annotations

import re

from moonmind.workflows.orchestrator.diagnosis.dockerfile import (
    Instruction,
    PackageManager,
    final_stage,
    instructions,
    package_manager,
    split_args,
)
from moonmind.workflows.orchestrator.diagnosis.signatures import Signature, SignatureKind
from moonmind.workflows.orchestrator.diagnosis.target import FileEdit, Target

# binary -> (apt package, apk package)
COMMAND_PACKAGES: dict[str, tuple[str, str]] = {
    "curl": ("curl", "curl"),
    "wget": ("wget", "wget"),
    "git": ("git", "git"),
    "jq": ("jq", "jq"),
    "ps": ("procps", "procps"),
    "pkill": ("procps", "procps"),
    "ping": ("iputils-ping", "iputils"),
    "nc": ("netcat-openbsd", "netcat-openbsd"),
    "unzip": ("unzip", "unzip"),
    "zip": ("zip", "zip"),
    "make": ("make", "make"),
    "gcc": ("gcc", "gcc"),
    "bash": ("bash", "bash"),
    "ssh": ("openssh-client", "openssh-client"),
    "psql": ("postgresql-client", "postgresql-client"),
    "pg_isready": ("postgresql-client", "postgresql-client"),
    "redis-cli": ("redis-tools", "redis"),
    "envsubst": ("gettext-base", "gettext"),
    "dig": ("dnsutils", "bind-tools"),
    "nslookup": ("dnsutils", "bind-tools"),
    "ip": ("iproute2", "iproute2"),
    "tini": ("tini", "tini"),
    "ffmpeg": ("ffmpeg", "ffmpeg"),
    "xz": ("xz-utils", "xz"),
    "file": ("file", "file"),
}

# shared object -> (apt package, apk package)
LIBRARY_PACKAGES: dict[str, tuple[str, str]] = {
    "libpq.so.5": ("libpq5", "libpq"),
    "libssl.so.3": ("libssl3", "libssl3"),
    "libcrypto.so.3": ("libssl3", "libcrypto3"),
    "libffi.so.8": ("libffi8", "libffi"),
    "libffi.so.7": ("libffi7", "libffi"),
    "libxml2.so.2": ("libxml2", "libxml2"),
    "libxslt.so.1": ("libxslt1.1", "libxslt"),
    "libGL.so.1": ("libgl1", "mesa-gl"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib"),
    "libgthread-2.0.so.0": ("libglib2.0-0", "glib"),
    "libgomp.so.1": ("libgomp1", "libgomp"),
    "libjpeg.so.62": ("libjpeg62-turbo", "libjpeg-turbo"),
    "libz.so.1": ("zlib1g", "zlib"),
    "libmagic.so.1": ("libmagic1", "libmagic"),
    "libsqlite3.so.0": ("libsqlite3-0", "sqlite-libs"),
    "libstdc++.so.6": ("libstdc++6", "libstdc++"),
    "libgcc_s.so.1": ("libgcc-s1", "libgcc"),
    "libSM.so.6": ("libsm6", "libsm"),
    "libXext.so.6": ("libxext6", "libxext"),
}


def os_package(kind: str, subject: str, manager: str) -> str | None:
    """apt or apk package providing a missing command or shared library."""
    table = COMMAND_PACKAGES if kind == SignatureKind.COMMAND_NOT_FOUND else LIBRARY_PACKAGES
    pair = table.get(subject)
    if pair is None:
        return None
    return pair[0] if manager == PackageManager.APT else pair[1]


def _already_installed(parsed: list[Instruction], package: str) -> bool:
    for ins in final_stage(parsed):
        if ins.keyword == "RUN" and re.search(r"\b(?:install|add)\b", ins.args):
            if package in split_args(ins.args):
                return True
    return False


def _install_line(manager: PackageManager, package: str) -> str:
    if manager is PackageManager.APK:
        return f"RUN apk add --no-cache {package}"
    return (
        "RUN apt-get update && apt-get install -y --no-install-recommends "
        f"{package} && rm -rf /var/lib/apt/lists/*"
    )


def os_package_edit(sig: Signature, target: Target) -> list[FileEdit]:
    """Insert an install line right after the final stage's FROM of the Dockerfile."""
    found = target.file(target.dockerfile)
    if found is None:
        return []
    data = found.read_bytes()
    text = data.decode("utf-8", errors="surrogateescape")
    parsed = instructions(text)
    manager = package_manager(parsed)
    package = os_package(sig.kind, sig.subject, manager) if manager else None
    if manager is None or package is None or _already_installed(parsed, package):
        return []
    from_line = final_stage(parsed)[0].line_index
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines(keepends=True)
    if not lines[from_line].endswith(("\n", "\r")):
        lines[from_line] += newline
    lines.insert(from_line + 1, _install_line(manager, package) + newline)
    new_data = "".join(lines).encode("utf-8", errors="surrogateescape")
    reason = f"install {manager} package {package} for missing {sig.subject}"
    return [FileEdit(target.dockerfile, new_data, reason)]
