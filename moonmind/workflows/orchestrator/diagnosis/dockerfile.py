"""Reading a Dockerfile: logical instructions, stages, base image, package manager, COPYs."""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from dataclasses import dataclass
from enum import StrEnum

from moonmind.workflows.orchestrator.diagnosis.target import Target
from moonmind.workflows.orchestrator.paths import join_relpath


class PackageManager(StrEnum):
    """OS package manager of an image."""

    APT = "apt"
    APK = "apk"


APT_IMAGES = frozenset(
    {"debian", "ubuntu", "python", "node", "buildpack-deps", "ruby", "golang", "nginx", "httpd"}
)


# A Debian or Ubuntu release named in an image's name or tag (python-base:bookworm).
_DEBIAN_RELEASE = re.compile(
    r"debian|ubuntu|bookworm|bullseye|buster|trixie|jammy|focal|noble|bionic"
)


@dataclass(frozen=True)
class Instruction:
    """One logical Dockerfile instruction (continuations joined)."""

    keyword: str
    args: str
    line_index: int


def instructions(text: str) -> list[Instruction]:
    """Logical instructions with the index of the physical line each starts on."""
    result: list[Instruction] = []
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
        result.append(Instruction(keyword.upper(), args.strip(), start))
    return result


def final_stage(parsed: list[Instruction]) -> list[Instruction]:
    """Instructions from the last FROM onwards."""
    starts = [i for i, ins in enumerate(parsed) if ins.keyword == "FROM"]
    return parsed[starts[-1] :] if starts else []


def split_args(args: str) -> list[str]:
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


def _stage_base(parsed: list[Instruction]) -> str:
    """Image the final stage ultimately builds on, following stage aliases."""
    aliases: dict[str, str] = {}
    image = ""
    for ins in parsed:
        if ins.keyword == "FROM":
            image, alias = _from_image(ins.args)
            image = aliases.get(image, image)
            if alias:
                aliases[alias] = image
    return image


def package_manager(parsed: list[Instruction]) -> PackageManager | None:
    """'apt' or 'apk' for the final stage, or None when the base is unknown."""
    image = _stage_base(parsed)
    name, _, tag = image.partition("@")[0].rpartition("/")[2].partition(":")
    if "alpine" in name or "alpine" in tag:
        return PackageManager.APK
    runs = " ".join(i.args for i in final_stage(parsed) if i.keyword == "RUN")
    if re.search(r"\bapk\s+add\b", runs):
        return PackageManager.APK
    if re.search(r"\bapt(?:-get)?\s+(?:-\S+\s+)*install\b", runs):
        return PackageManager.APT
    if name in APT_IMAGES or _DEBIAN_RELEASE.search(f"{name}:{tag}"):
        return PackageManager.APT
    return None


# --------------------------------------------------------------------------- COPY / ADD


@dataclass(frozen=True)
class Copy:
    """Host sources and absolute container destination of one COPY/ADD."""

    sources: list[str]
    dest: str


def copy_of(ins: Instruction, workdir: str) -> Copy | None:
    """Host sources and absolute destination of a COPY/ADD from the build context."""
    tokens = split_args(ins.args)
    if any(t.startswith("--from") for t in tokens):
        return None
    tokens = [t for t in tokens if not t.startswith("--")]
    if len(tokens) < 2:
        return None
    return Copy(tokens[:-1], posixpath.join(workdir, tokens[-1]))


def _expand_source(src: str, target: Target) -> list[str]:
    """Workspace-relative paths a COPY source names (wildcards expanded, escapes dropped)."""
    src = src.lstrip("/") or "."
    src_rel = join_relpath(target.context, src)
    if src_rel is None:
        return []
    if not re.search(r"[*?\[]", src):
        return [src_rel]
    pattern = posixpath.normpath(src)
    if pattern.startswith(".."):
        return []
    base = target.workspace / (target.context or ".")
    return [p.relative_to(target.workspace).as_posix() for p in sorted(base.glob(pattern))]


def _landing(container_path: str, dest: str, src_rel: str, target: Target) -> str | None:
    """Source file that ends up at container_path when src_rel is copied to dest."""
    if src_rel == "" or (target.workspace / src_rel).is_dir():
        prefix = dest.rstrip("/") + "/"
        if not container_path.startswith(prefix):
            return None
        return join_relpath(src_rel or ".", container_path[len(prefix) :])
    # A single file lands at dest itself, or inside dest when dest is a directory.
    inside = posixpath.join(dest, posixpath.basename(src_rel))
    return src_rel if container_path in (dest, inside) else None


def _source_for(container_path: str, copy: Copy, target: Target) -> str | None:
    """Build-context file that a COPY placed at container_path, if it did."""
    dest = posixpath.normpath(copy.dest)
    for src in copy.sources:
        for src_rel in _expand_source(src, target):
            candidate = _landing(container_path, dest, src_rel, target)
            if candidate and target.file(candidate):
                return candidate
    return None


def copied_from(container_path: str, copies: list[Copy], target: Target) -> str | None:
    """Source of the latest COPY that placed a file at container_path."""
    normalized = posixpath.normpath(container_path)
    for copy in reversed(copies):
        src = _source_for(normalized, copy, target)
        if src:
            return src
    return None
