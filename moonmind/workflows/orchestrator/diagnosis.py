"""Failure signatures found in service logs and the built-in edits that fix common ones.

Signatures turn noisy container logs into a few facts the analysis and the rules can use.
The rules only cover cases with an obvious, low-risk fix (add a dependency or an OS
package); everything else is left for the coding agent. Apart from reading workspace
files, nothing here has side effects.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

# --------------------------------------------------------------------------- signatures


@dataclass(frozen=True)
class Signature:
    """One recognised failure: what kind, about what, and the log line that showed it."""

    kind: str
    subject: str
    line: str


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_SHELL = r"(?:^|[\s|])(?:/usr)?(?:/bin/)?(?:ba|da|z|a)?sh"
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "python_missing_module",
        re.compile(r"(?:ModuleNotFoundError|ImportError): No module named '?\"?([\w.]+)"),
    ),
    (
        "node_missing_module",
        re.compile(
            r"Error(?: \[ERR_MODULE_NOT_FOUND\])?: Cannot find (?:module|package) '([^']+)'"
        ),
    ),
    (
        "missing_shared_library",
        re.compile(r"error while loading shared libraries: ([^\s:]+): cannot open shared object"),
    ),
    (
        "command_not_found",
        re.compile(_SHELL + r": (?:line )?(?:\d+: )?(?:exec: )?([^\s:]+): not found"),
    ),
    ("command_not_found", re.compile(_SHELL + r": (?:line \d+: )?([^\s:]+): command not found")),
    ("command_not_found", re.compile(r"exec: \"([^\"]+)\": executable file not found in \$PATH")),
    (
        "pip_no_distribution",
        re.compile(r"No matching distribution found for ([A-Za-z0-9][A-Za-z0-9._-]*)"),
    ),
)


def _subject(kind: str, raw: str) -> str | None:
    """Normalise the captured name; None when the hit is not worth reporting."""
    if kind == "python_missing_module":
        return raw.split(".")[0] or None
    if kind == "node_missing_module":
        return _node_package(raw)
    if kind == "command_not_found":
        return posixpath.basename(raw) or None
    return raw


def _node_package(spec: str) -> str | None:
    """Package name of a bare module specifier; relative and absolute paths give None."""
    if spec.startswith((".", "/")) or not spec:
        return None
    parts = spec.split("/")
    if spec.startswith("@"):
        return "/".join(parts[:2]) if len(parts) >= 2 else None
    return parts[0]


def _line_signatures(line: str) -> Iterator[Signature]:
    for kind, pattern in _PATTERNS:
        for match in pattern.finditer(line):
            subject = _subject(kind, match.group(1))
            if subject:
                yield Signature(kind, subject, line)


def detect_signatures(log_text: str) -> list[Signature]:
    """Recognised failures in order of first appearance, one per (kind, subject)."""
    seen: set[tuple[str, str]] = set()
    found: list[Signature] = []
    for raw_line in log_text.splitlines():
        line = _ANSI.sub("", raw_line).strip()
        for sig in _line_signatures(line):
            if (sig.kind, sig.subject) not in seen:
                seen.add((sig.kind, sig.subject))
                found.append(sig)
    return found


# --------------------------------------------------------------------------- lookup tables

IMPORT_TO_DISTRIBUTION: dict[str, str] = {
    "yaml": "PyYAML",
    "PIL": "Pillow",
    "cv2": "opencv-python",
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "bs4": "beautifulsoup4",
    "dateutil": "python-dateutil",
    "dotenv": "python-dotenv",
    "jwt": "PyJWT",
    "Crypto": "pycryptodome",
    "psycopg2": "psycopg2-binary",
    "MySQLdb": "mysqlclient",
    "attr": "attrs",
    "magic": "python-magic",
    "serial": "pyserial",
    "usb": "pyusb",
    "zmq": "pyzmq",
    "OpenSSL": "pyOpenSSL",
    "docx": "python-docx",
    "pptx": "python-pptx",
    "git": "GitPython",
    "multipart": "python-multipart",
    "jose": "python-jose",
    "slugify": "python-slugify",
    "Levenshtein": "python-Levenshtein",
    "fitz": "PyMuPDF",
    "win32api": "pywin32",
    "telegram": "python-telegram-bot",
    "socks": "PySocks",
    "ldap": "python-ldap",
    "nacl": "PyNaCl",
    "lxml": "lxml",
    "Bio": "biopython",
    "pkg_resources": "setuptools",
    "dns": "dnspython",
    "websocket": "websocket-client",
    "markdown": "Markdown",
    "jinja2": "Jinja2",
}

# Top-level namespaces shared by many distributions: guessing one would be wrong.
AMBIGUOUS_IMPORTS = frozenset({"google", "azure", "backports", "zope", "jaraco", "sphinxcontrib"})

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

_APT_IMAGES = frozenset(
    {"debian", "ubuntu", "python", "node", "buildpack-deps", "ruby", "golang", "nginx", "httpd"}
)


def distribution_for_module(module: str) -> str | None:
    """PyPI distribution providing a top-level import; None when it cannot be guessed."""
    top = module.split(".")[0]
    if not top or top in AMBIGUOUS_IMPORTS or top in sys.stdlib_module_names:
        return None
    return IMPORT_TO_DISTRIBUTION.get(top, top)


def os_package(kind: str, subject: str, manager: str) -> str | None:
    """apt or apk package providing a missing command or shared library."""
    table = COMMAND_PACKAGES if kind == "command_not_found" else LIBRARY_PACKAGES
    pair = table.get(subject)
    if pair is None:
        return None
    return pair[0] if manager == "apt" else pair[1]


# --------------------------------------------------------------------------- edits


@dataclass(frozen=True)
class FileEdit:
    """Full new content for one workspace-relative file, with a human reason."""

    path: str
    new_data: bytes
    reason: str


@dataclass(frozen=True)
class _Target:
    """Where the service's files live, resolved against the workspace."""

    workspace: Path
    context: str
    dockerfile: str

    def file(self, relpath: str) -> Path | None:
        """Existing regular file inside the workspace, or None."""
        full = self.workspace / relpath
        if not full.is_file() or full.is_symlink():
            return None
        real_root = self.workspace.resolve()
        return full if full.resolve().is_relative_to(real_root) else None


def _norm_rel(*parts: str) -> str | None:
    """Join and normalise workspace-relative parts; None when the result escapes."""
    joined = posixpath.normpath(posixpath.join(*parts))
    if joined.startswith(("../", "/")) or joined == "..":
        return None
    return "" if joined == "." else joined


def derive_rule_edits(
    signatures: Sequence[Signature], *, workspace: Path, build_context: str, dockerfile: str
) -> list[FileEdit]:
    """Edits for the first signature a built-in rule can fix; [] when none applies."""
    context = _norm_rel(build_context or ".")
    docker = _norm_rel(dockerfile)
    if context is None or docker is None:
        return []
    target = _Target(Path(workspace), context, docker)
    for sig in signatures:
        edits = _edits_for(sig, target)
        if edits:
            return edits
    return []


def _edits_for(sig: Signature, target: _Target) -> list[FileEdit]:
    if sig.kind == "python_missing_module":
        return _python_edit(sig, target)
    if sig.kind == "node_missing_module":
        return _node_edit(sig, target)
    if sig.kind in ("command_not_found", "missing_shared_library"):
        return _os_package_edit(sig, target)
    return []


# --------------------------------------------------------------------------- Dockerfile parsing


@dataclass(frozen=True)
class _Instruction:
    """One logical Dockerfile instruction (continuations joined)."""

    keyword: str
    args: str
    line_index: int


def _instructions(text: str) -> list[_Instruction]:
    """Logical instructions with the index of the physical line each starts on."""
    result: list[_Instruction] = []
    buf: list[str] = []
    start = 0
    for index, line in enumerate(text.splitlines()):
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if not buf:
            start = index
        if stripped.endswith("\\"):
            buf.append(stripped[:-1])
            continue
        buf.append(stripped)
        logical = " ".join(part for part in buf if not part.startswith("#"))
        buf = []
        keyword, _, args = logical.partition(" ")
        result.append(_Instruction(keyword.upper(), args.strip(), start))
    return result


def _final_stage(instructions: list[_Instruction]) -> list[_Instruction]:
    """Instructions from the last FROM onwards."""
    starts = [i for i, ins in enumerate(instructions) if ins.keyword == "FROM"]
    return instructions[starts[-1] :] if starts else []


def _split_args(args: str) -> list[str]:
    """Tokenise instruction arguments, accepting both JSON-array and shell forms."""
    if args.startswith("["):
        try:
            parsed = json.loads(args)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(x, str) for x in parsed):
            return list(parsed)
    try:
        return shlex.split(args, comments=False)
    except ValueError:
        return args.split()


def _from_image(args: str) -> tuple[str, str | None]:
    """Image reference and optional stage alias of a FROM instruction."""
    tokens = [t for t in args.split() if not t.startswith("--")]
    image = tokens[0].lower() if tokens else ""
    alias = tokens[2].lower() if len(tokens) >= 3 and tokens[1].lower() == "as" else None
    return image, alias


# --------------------------------------------------------------------------- python rule


@dataclass(frozen=True)
class _Copy:
    sources: list[str]
    dest: str


def _copy_of(ins: _Instruction, workdir: str) -> _Copy | None:
    """Host sources and absolute destination of a COPY/ADD from the build context."""
    tokens = _split_args(ins.args)
    if any(t.startswith("--from") for t in tokens):
        return None
    tokens = [t for t in tokens if not t.startswith("--")]
    if len(tokens) < 2:
        return None
    return _Copy(tokens[:-1], posixpath.join(workdir, tokens[-1]))


_SEPARATORS = frozenset({"&&", "||", ";", "|"})


def _commands(tokens: list[str]) -> Iterator[list[str]]:
    """Split a RUN token list into the simple commands joined by && ; || |."""
    current: list[str] = []
    for token in tokens:
        if token in _SEPARATORS:
            yield current
            current = []
        else:
            current.append(token.rstrip(";"))
    yield current


def _is_pip_install(command: list[str]) -> bool:
    names = [posixpath.basename(t) for t in command]
    has_pip = any(re.fullmatch(r"pip(?:3(?:\.\d+)?)?", n) for n in names)
    return has_pip and "install" in names


def _requirement_args(run_args: str) -> list[str]:
    """Requirement file arguments of every pip install in a RUN instruction."""
    found: list[str] = []
    for command in _commands(_split_args(run_args)):
        if not _is_pip_install(command):
            continue
        for i, token in enumerate(command):
            if token in ("-r", "--requirement") and i + 1 < len(command):
                found.append(command[i + 1])
            elif token.startswith("--requirement="):
                found.append(token.split("=", 1)[1])
            elif token.startswith("-r") and len(token) > 2 and not token.startswith("--"):
                found.append(token[2:])
    return found


def _expand_source(src: str, target: _Target) -> list[str]:
    """Workspace-relative paths a COPY source names (wildcards expanded, escapes dropped)."""
    src = src.lstrip("/") or "."
    src_rel = _norm_rel(target.context, src)
    if src_rel is None:
        return []
    if not re.search(r"[*?\[]", src):
        return [src_rel]
    pattern = posixpath.normpath(src)
    if pattern.startswith(".."):
        return []
    base = target.workspace / (target.context or ".")
    return [p.relative_to(target.workspace).as_posix() for p in sorted(base.glob(pattern))]


def _landing(container_path: str, dest: str, src_rel: str, target: _Target) -> str | None:
    """Source file that ends up at container_path when src_rel is copied to dest."""
    if src_rel == "" or (target.workspace / src_rel).is_dir():
        prefix = dest.rstrip("/") + "/"
        if not container_path.startswith(prefix):
            return None
        return _norm_rel(src_rel or ".", container_path[len(prefix) :])
    # A single file lands at dest itself, or inside dest when dest is a directory.
    inside = posixpath.join(dest, posixpath.basename(src_rel))
    return src_rel if container_path in (dest, inside) else None


def _source_for(container_path: str, copy: _Copy, target: _Target) -> str | None:
    """Build-context file that a COPY placed at container_path, if it did."""
    dest = posixpath.normpath(copy.dest)
    for src in copy.sources:
        for src_rel in _expand_source(src, target):
            candidate = _landing(container_path, dest, src_rel, target)
            if candidate and target.file(candidate):
                return candidate
    return None


def _installed_requirements(target: _Target) -> list[str]:
    """Build-context requirement files any stage of the Dockerfile installs, in order."""
    dockerfile = target.file(target.dockerfile)
    if dockerfile is None:
        return []
    text = dockerfile.read_text(encoding="utf-8", errors="replace")
    workdir = "/"
    copies: list[_Copy] = []
    found: list[str] = []
    for ins in _instructions(text):
        if ins.keyword == "FROM":
            workdir, copies = "/", []
        elif ins.keyword == "WORKDIR":
            workdir = posixpath.join(workdir, ins.args.strip() or ".")
        elif ins.keyword in ("COPY", "ADD"):
            copy = _copy_of(ins, workdir)
            copies += [copy] if copy else []
        elif ins.keyword == "RUN":
            for req in _requirement_args(ins.args):
                src = _copied_from(posixpath.join(workdir, req), copies, target)
                if src and src not in found:
                    found.append(src)
    return found


def _copied_from(container_path: str, copies: list[_Copy], target: _Target) -> str | None:
    """Source of the latest COPY that placed a file at container_path."""
    normalized = posixpath.normpath(container_path)
    for copy in reversed(copies):
        src = _source_for(normalized, copy, target)
        if src:
            return src
    return None


def _requirements_files(target: _Target) -> list[str]:
    """Files to consider; falls back to requirements.txt in the build context."""
    found = _installed_requirements(target)
    if found:
        return found
    fallback = _norm_rel(target.context, "requirements.txt")
    return [fallback] if fallback and target.file(fallback) else []


def canonical_name(name: str) -> str:
    """PEP 503 normalised project name, for comparisons."""
    return re.sub(r"[-_.]+", "-", name).lower()


_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EGG = re.compile(r"#egg=([A-Za-z0-9][A-Za-z0-9._-]*)")
_INCLUDE = re.compile(r"^(?:-r|--requirement)(?:\s*=\s*|\s*)(\S+)")


def _listed_names(path: Path, seen: set[Path], target: _Target) -> set[str]:
    """Canonical names listed in a requirements file, following nested -r includes."""
    if path in seen or len(seen) > 20:
        return set()
    seen.add(path)
    names: set[str] = set()
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if egg := _EGG.search(line):
            names.add(canonical_name(egg.group(1)))
        if include := _INCLUDE.match(line):
            nested = path.parent / include.group(1)
            if nested.is_file() and nested.resolve().is_relative_to(target.workspace.resolve()):
                names |= _listed_names(nested, seen, target)
        elif match := _REQ_NAME.match(line):
            names.add(canonical_name(match.group(1)))
    return names


def _append_line(data: bytes, entry: str) -> bytes:
    """Append one line, keeping existing bytes and the file's newline style."""
    newline = b"\r\n" if b"\r\n" in data else b"\n"
    if data and not data.endswith(b"\n"):
        data += newline
    return data + entry.encode("utf-8") + newline


def _is_local_module(module: str, target: _Target) -> bool:
    """The import names a package shipped in the build context, so pip cannot fix it."""
    base = target.workspace / (target.context or ".")
    return (base / module).is_dir() or (base / f"{module}.py").is_file()


def _python_edit(sig: Signature, target: _Target) -> list[FileEdit]:
    dist = distribution_for_module(sig.subject)
    if dist is None or _is_local_module(sig.subject, target):
        return []
    files = _requirements_files(target)
    seen: set[Path] = set()
    for rel in files:
        found = target.file(rel)
        if found and canonical_name(dist) in _listed_names(found, seen, target):
            return []
    if not files:
        return []
    first = files[0]
    data = (target.workspace / first).read_bytes()
    reason = f"add {dist} for missing Python module '{sig.subject}'"
    return [FileEdit(first, _append_line(data, dist), reason)]


# --------------------------------------------------------------------------- node rule

_NODE_BUILTINS = frozenset(
    {
        "fs",
        "path",
        "http",
        "https",
        "os",
        "crypto",
        "url",
        "util",
        "events",
        "stream",
        "child_process",
    }
)


def _json_indent(text: str) -> str | int:
    """Indentation used by an existing JSON document (2 spaces when unknown)."""
    match = re.search(r"^\{\s*?\n([ \t]+)\S", text)
    return match.group(1) if match else 2


def _node_edit(sig: Signature, target: _Target) -> list[FileEdit]:
    name = sig.subject
    if name in _NODE_BUILTINS or name.startswith("node:"):
        return []
    rel = _norm_rel(target.context, "package.json")
    found = target.file(rel) if rel else None
    if rel is None or found is None:
        return []
    text = found.read_text(encoding="utf-8")
    try:
        doc = json.loads(text)
    except ValueError:
        return []
    deps = doc.get("dependencies") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or (deps is not None and not isinstance(deps, dict)):
        return []
    if deps is not None and name in deps:
        return []
    doc["dependencies"] = {**(deps or {}), name: "*"}
    out = json.dumps(doc, indent=_json_indent(text), ensure_ascii=False)
    out += "\n" if text.endswith("\n") else ""
    reason = f"add npm dependency {name} for missing module"
    return [FileEdit(rel, out.encode("utf-8"), reason)]


# --------------------------------------------------------------------------- OS package rule


def _stage_base(instructions: list[_Instruction]) -> str:
    """Image the final stage ultimately builds on, following stage aliases."""
    aliases: dict[str, str] = {}
    image = ""
    for ins in instructions:
        if ins.keyword == "FROM":
            image, alias = _from_image(ins.args)
            image = aliases.get(image, image)
            if alias:
                aliases[alias] = image
    return image


def package_manager(instructions: list[_Instruction]) -> str | None:
    """'apt' or 'apk' for the final stage, or None when the base is unknown."""
    image = _stage_base(instructions)
    name, _, tag = image.partition("@")[0].rpartition("/")[2].partition(":")
    if "alpine" in name or "alpine" in tag:
        return "apk"
    runs = " ".join(i.args for i in _final_stage(instructions) if i.keyword == "RUN")
    if re.search(r"\bapk\s+add\b", runs):
        return "apk"
    if re.search(r"\bapt(?:-get)?\s+(?:-\S+\s+)*install\b", runs):
        return "apt"
    return "apt" if name in _APT_IMAGES else None


def _already_installed(instructions: list[_Instruction], package: str) -> bool:
    for ins in _final_stage(instructions):
        if ins.keyword == "RUN" and re.search(r"\b(?:install|add)\b", ins.args):
            if package in _split_args(ins.args):
                return True
    return False


def _install_line(manager: str, package: str) -> str:
    if manager == "apk":
        return f"RUN apk add --no-cache {package}"
    return (
        "RUN apt-get update && apt-get install -y --no-install-recommends "
        f"{package} && rm -rf /var/lib/apt/lists/*"
    )


def _os_package_edit(sig: Signature, target: _Target) -> list[FileEdit]:
    found = target.file(target.dockerfile)
    if found is None:
        return []
    data = found.read_bytes()
    text = data.decode("utf-8", errors="surrogateescape")
    instructions = _instructions(text)
    manager = package_manager(instructions)
    package = os_package(sig.kind, sig.subject, manager) if manager else None
    if manager is None or package is None or _already_installed(instructions, package):
        return []
    from_line = _final_stage(instructions)[0].line_index
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines(keepends=True)
    if not lines[from_line].endswith(("\n", "\r")):
        lines[from_line] += newline
    lines.insert(from_line + 1, _install_line(manager, package) + newline)
    new_data = "".join(lines).encode("utf-8", errors="surrogateescape")
    reason = f"install {manager} package {package} for missing {sig.subject}"
    return [FileEdit(target.dockerfile, new_data, reason)]


def describe(signatures: Iterable[Signature]) -> list[str]:
    """One readable sentence per signature, for the analysis report."""
    texts = {
        "python_missing_module": "Python module '{}' is not installed",
        "node_missing_module": "Node package '{}' is not installed",
        "missing_shared_library": "shared library {} is missing from the image",
        "command_not_found": "command '{}' is not available in the image",
        "pip_no_distribution": "pip cannot find a distribution for '{}' (check name/version)",
    }
    return [texts.get(s.kind, s.kind + ": {}").format(s.subject) for s in signatures]
