"""Dockerfile edits an instruction asks for: an OS package, an ENV line, the base image.

Each touches one line: a package is added to the final stage's existing apt-get/apk
install line (or a new RUN line for the image's package manager goes under its FROM), a
variable's single-variable ENV line is replaced (or a new one goes under the FROM), and
the FROM line of the stage the image belongs to gets the new reference.
"""

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
from moonmind.workflows.orchestrator.diagnosis.intents import OS_NAME, Intent
from moonmind.workflows.orchestrator.diagnosis.kind_rules import env_line
from moonmind.workflows.orchestrator.diagnosis.os_packages import COMMAND_PACKAGES, _install_line
from moonmind.workflows.orchestrator.diagnosis.target import FileEdit, Target

Outcome = list[FileEdit] | str
_INSTALL = {
    PackageManager.APT: re.compile(r"\bapt(?:-get)?\s+(?:-\S+\s+)*install((?:\s+-\S+)*)"),
    PackageManager.APK: re.compile(r"\bapk\s+(?:-\S+\s+)*add((?:\s+-\S+)*)"),
}


def _read(target: Target) -> tuple[str, list[str], list[Instruction]] | str:
    found = target.file(target.dockerfile)
    if found is None:
        return f"no Dockerfile at {target.dockerfile}"
    text = found.read_bytes().decode("utf-8", errors="surrogateescape")
    parsed = instructions(text)
    if not final_stage(parsed):
        return f"{target.dockerfile} has no FROM line"
    return text, text.splitlines(keepends=True), parsed


def _edit(target: Target, lines: list[str], reason: str) -> list[FileEdit]:
    data = "".join(lines).encode("utf-8", errors="surrogateescape")
    return [FileEdit(target.dockerfile, data, reason)]


def _newline(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def _insert_after_from(text: str, lines: list[str], parsed: list[Instruction], new: str) -> None:
    """Put one line right under the final stage's FROM."""
    at = final_stage(parsed)[0].line_index
    if not lines[at].endswith(("\n", "\r")):
        lines[at] += _newline(text)
    lines.insert(at + 1, new + _newline(text))


def os_package_name(name: str, manager: PackageManager) -> str:
    """The package to install for a name: a known command maps to its package."""
    pair = COMMAND_PACKAGES.get(name)
    if pair is None:
        return name
    return pair[0] if manager is PackageManager.APT else pair[1]


def os_change(intent: Intent, target: Target) -> Outcome:
    if intent.action != "add":
        return f"only adding OS packages is supported, not '{intent.action}'"
    read = _read(target)
    if isinstance(read, str):
        return read
    text, lines, parsed = read
    manager = package_manager(parsed)
    if manager is None:
        return "the base image's package manager is unknown (neither apt nor apk)"
    package = os_package_name(intent.name, manager)
    if not OS_NAME.match(package):
        return f"'{package}' is not a valid {manager} package name"
    runs = [i for i in final_stage(parsed) if i.keyword == "RUN"]
    if any(_INSTALL[manager].search(i.args) and package in split_args(i.args) for i in runs):
        return f"{package} is already installed by {target.dockerfile}"
    reason = f"install {manager} package {package} in {target.dockerfile}"
    for ins in runs:  # the final stage's own install line, if it has one
        for index in range(ins.line_index, len(lines)):
            m = _INSTALL[manager].search(lines[index])
            if m:
                lines[index] = lines[index][: m.end()] + f" {package}" + lines[index][m.end() :]
                return _edit(target, lines, reason)
            if not lines[index].rstrip().endswith("\\"):
                break
    _insert_after_from(text, lines, parsed, _install_line(manager, package))
    return _edit(target, lines, reason)


def _declares(ins: Instruction, name: str) -> list[str] | None:
    """The ENV instruction's tokens when it sets ``name``, else None."""
    if ins.keyword != "ENV":
        return None
    tokens = split_args(ins.args)
    if tokens and tokens[0] == name and "=" not in tokens[0]:
        return tokens  # legacy form: ENV NAME value
    return tokens if any(t.startswith(f"{name}=") for t in tokens) else None


def _end_line(lines: list[str], start: int) -> int:
    end = start
    while end + 1 < len(lines) and lines[end].rstrip().endswith("\\"):
        end += 1
    return end


def env_change(intent: Intent, target: Target) -> Outcome:
    read = _read(target)
    if isinstance(read, str):
        return read
    text, lines, parsed = read
    name, new = intent.name, env_line(intent.name, intent.value)
    reason = f"set {name} in {target.dockerfile}"
    declared = [(i, t) for i in final_stage(parsed) if (t := _declares(i, name)) is not None]
    if not declared:
        _insert_after_from(text, lines, parsed, new)
        return _edit(target, lines, reason)
    ins, tokens = declared[-1]
    if split_args(new[4:]) == tokens:
        return f"{target.dockerfile} already sets {name}={intent.value}"
    end = _end_line(lines, ins.line_index)
    if end == ins.line_index and (len(tokens) == 1 or "=" not in tokens[0]):
        ending = lines[end][len(lines[end].rstrip("\r\n")) :]
        lines[end] = new + (ending or _newline(text))  # its own line: replace it
    else:  # set with other variables: a line after it overrides it
        if not lines[end].endswith(("\n", "\r")):
            lines[end] += _newline(text)
        lines.insert(end + 1, new + _newline(text))
    return _edit(target, lines, reason)


def _repository(ref: str) -> str:
    """``registry/name`` of an image reference, without tag or digest."""
    ref = ref.split("@", 1)[0]
    head, _, tail = ref.rpartition("/")
    return f"{head}/{tail.split(':', 1)[0]}" if head else tail.split(":", 1)[0]


def base_image_change(intent: Intent, target: Target) -> Outcome:
    read = _read(target)
    if isinstance(read, str):
        return read
    text, lines, parsed = read
    froms = [i for i in parsed if i.keyword == "FROM"]
    aliases = {t[-1].lower() for i in froms if len(t := i.args.split()) >= 3}
    same = [
        i
        for i in froms
        if _image_token(i) and _repository(_image_token(i)) == _repository(intent.name)
    ]
    final = froms[-1]
    chosen = final if final in same or not same else (same[0] if len(same) == 1 else None)
    if chosen is None:
        return f"several FROM lines use {_repository(intent.name)}: edit the Dockerfile by hand"
    image = _image_token(chosen)
    if not image or "$" in image or image.lower() in aliases:
        return f"the FROM line '{chosen.args}' does not name an image to replace"
    if image == intent.name:
        return f"{target.dockerfile} already uses {intent.name}"
    line = lines[chosen.line_index]
    m = re.search(rf"(?<=\s){re.escape(image)}(?=\s|$)", line)
    if m is None:
        return f"the FROM line of {target.dockerfile} spans several lines: edit it by hand"
    lines[chosen.line_index] = line[: m.start()] + intent.name + line[m.end() :]
    return _edit(target, lines, f"base image {image} -> {intent.name} in {target.dockerfile}")


def _image_token(ins: Instruction) -> str:
    tokens = [t for t in ins.args.split() if not t.startswith("--")]
    return tokens[0] if tokens else ""
