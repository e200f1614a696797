"""Python rule: add the distribution of a missing module to the requirements pip installs."""

from __future__ import annotations

import posixpath
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from moonmind.workflows.orchestrator.diagnosis.dockerfile import (
    Copy,
    copied_from,
    copy_of,
    instructions,
    split_args,
)
from moonmind.workflows.orchestrator.diagnosis.signatures import Signature
from moonmind.workflows.orchestrator.diagnosis.target import FileEdit, Target
from moonmind.workflows.orchestrator.paths import join_relpath

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

# Distributions whose import name is their own name (known, so not a guess).
SAME_NAME_DISTRIBUTIONS = frozenset(
    {"requests", "flask", "django", "numpy", "pandas", "scipy", "fastapi", "uvicorn",
     "gunicorn", "httpx", "redis", "celery", "sqlalchemy", "pydantic", "click", "boto3",
     "botocore", "jinja2", "werkzeug", "aiohttp", "pytest", "six", "certifi", "urllib3",
     "idna", "psutil", "pymongo", "psycopg", "kombu", "tqdm", "rich", "structlog",
     "alembic", "marshmallow", "toml", "tomli", "orjson", "ujson", "simplejson", "packaging",
     "setuptools", "wheel", "cryptography", "paramiko", "pytz", "tzdata", "arrow",
     "pendulum", "prometheus_client", "starlette", "anyio", "sniffio", "h11",
     "yarl", "multidict", "frozenlist", "markupsafe", "itsdangerous", "docker",
     "pika", "stripe", "openai", "tenacity", "cachetools", "filelock", "platformdirs",
     "matplotlib", "seaborn", "torch", "requests_toolbelt", "msgpack", "lz4", "zstandard"}
)  # fmt: skip

# Top-level namespaces shared by many distributions: guessing one would be wrong.
AMBIGUOUS_IMPORTS = frozenset({"google", "azure", "backports", "zope", "jaraco", "sphinxcontrib"})


def distribution_for_module(module: str) -> str | None:
    """PyPI distribution providing a top-level import; None when it cannot be guessed."""
    top = module.split(".")[0]
    if not top or top in AMBIGUOUS_IMPORTS or top in sys.stdlib_module_names:
        return None
    return IMPORT_TO_DISTRIBUTION.get(top, top)


def guessed_distribution(module: str) -> str:
    """Why the distribution of ``module`` is a guess ('' when the tables know it)."""
    top = module.split(".")[0]
    if top in IMPORT_TO_DISTRIBUTION or top.lower() in SAME_NAME_DISTRIBUTIONS:
        return ""
    return (
        f"'{top}' is not in the known import-to-distribution table: assumed the PyPI "
        f"distribution of the same name"
    )


def canonical_name(name: str) -> str:
    """PEP 503 normalised project name, for comparisons."""
    return re.sub(r"[-_.]+", "-", name).lower()


# --------------------------------------------------------------------------- pip in RUN lines

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
    for command in _commands(split_args(run_args)):
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


def _installed_requirements(target: Target) -> list[str]:
    """Build-context requirement files any stage of the Dockerfile installs, in order."""
    dockerfile = target.file(target.dockerfile)
    if dockerfile is None:
        return []
    text = dockerfile.read_text(encoding="utf-8", errors="replace")
    workdir = "/"
    copies: list[Copy] = []
    found: list[str] = []
    for ins in instructions(text):
        if ins.keyword == "FROM":
            workdir, copies = "/", []
        elif ins.keyword == "WORKDIR":
            workdir = posixpath.join(workdir, ins.args.strip() or ".")
        elif ins.keyword in ("COPY", "ADD"):
            copy = copy_of(ins, workdir)
            copies += [copy] if copy else []
        elif ins.keyword == "RUN":
            for req in _requirement_args(ins.args):
                src = copied_from(posixpath.join(workdir, req), copies, target)
                if src and src not in found:
                    found.append(src)
    return found


def _requirements_files(target: Target) -> list[str]:
    """Files to consider; falls back to requirements.txt in the build context."""
    found = _installed_requirements(target)
    if found:
        return found
    fallback = join_relpath(target.context, "requirements.txt")
    return [fallback] if fallback and target.file(fallback) else []


# --------------------------------------------------------------------------- requirements files

_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EGG = re.compile(r"#egg=([A-Za-z0-9][A-Za-z0-9._-]*)")
_INCLUDE = re.compile(r"^(?:-r|--requirement)(?:\s*=\s*|\s*)(\S+)")


def _listed_names(path: Path, seen: set[Path], target: Target) -> set[str]:
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
            if nested.is_file() and target.contains(nested):
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


def _is_local_module(module: str, target: Target) -> bool:
    """The import names a package shipped in the build context, so pip cannot fix it."""
    base = target.workspace / (target.context or ".")
    return (base / module).is_dir() or (base / f"{module}.py").is_file()


def python_edit(sig: Signature, target: Target) -> list[FileEdit]:
    """Append the missing module's distribution to the first installed requirements file."""
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
    guess = guessed_distribution(sig.subject)
    reason = f"add {dist} for missing Python module '{sig.subject}'" + (
        " (a guess)" if guess else ""
    )
    edit = FileEdit(first, _append_line(data, dist), reason, dist, "python", guess)
    return [edit]
