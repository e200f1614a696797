"""What an operator's instruction asks for, read without an agent: one change per run.

``parse_intent`` recognises a few verbs and their objects — add / remove / pin a package,
set an environment variable, use another base image — and keeps the words it read them
from. Text without such a verb gives None (the failure's own rules decide); a verb whose
object is missing, doubled or not a valid name gives an Intent with ``refused`` set, so
the run can say what it did not understand instead of guessing.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any


class Action(StrEnum):
    """Stored in analysis.json: never rename the values."""

    ADD = "add"
    REMOVE = "remove"
    PIN = "pin"
    SET_ENV = "set_env"
    BASE_IMAGE = "base_image"


class Ecosystem(StrEnum):
    PYTHON = "python"
    NODE = "node"
    OS = "os"


@dataclass(frozen=True)
class Intent:
    """One recognised change; ``refused`` says why it cannot be made (empty: it can)."""

    action: Action
    words: str  # the part of the instruction it was read from
    name: str = ""  # package, variable or image
    value: str = ""  # version or variable value
    ecosystem: str = ""  # python | node | os, when the operator said it (or it was decided)
    refused: str = ""

    def record(self) -> dict[str, Any]:
        return {key: str(value) for key, value in asdict(self).items()}

    def refuse(self, reason: str) -> Intent:
        return replace(self, refused=reason)


PYTHON_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
NPM_NAME = re.compile(r"^(?:@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*$")
OS_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
VERSION = re.compile(r"^v?(\d+(?:\.\d+)*(?:[a-z]+\d*)?(?:\.post\d+)?)$")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REF = re.compile(
    rf"^(?:[a-zA-Z0-9.-]+(?::\d+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)

_VERB = re.compile(
    r"(?i)\b(add|install|remove|uninstall|drop|delete|pin|set|use|switch|change|upgrade)\b"
)
_SCOPE = frozenset({"to", "in", "into", "on", "for", "from", "of", "at", "with"})
_HINTS = {
    "python": Ecosystem.PYTHON, "pip": Ecosystem.PYTHON, "pypi": Ecosystem.PYTHON,
    "requirements": Ecosystem.PYTHON, "node": Ecosystem.NODE, "npm": Ecosystem.NODE,
    "os": Ecosystem.OS, "apt": Ecosystem.OS, "apt-get": Ecosystem.OS, "apk": Ecosystem.OS,
    "system": Ecosystem.OS, "debian": Ecosystem.OS, "alpine": Ecosystem.OS,
}  # fmt: skip
_FILLER = frozenset(
    {"the", "a", "an", "package", "packages", "dependency", "dependencies", "library",
     "lib", "module", "distribution", "binary", "command", "tool", "please", "version",
     "dep", "deps"}
)  # fmt: skip
_PRONOUNS = frozenset({"it", "this", "that", "them", "these", "those", "one", "something"})
_MISSING = frozenset({"missing", "needed", "required", "necessary"})
_END = re.compile(r"[;,!?]|\.(?:\s|$)|\b(?:and|then|but|so)\b", re.I)


def _tokens(text: str) -> list[str]:
    return [t.strip("`'\",") for t in text.split() if t.strip("`'\",")]


def _sentence(text: str) -> str:
    """Words up to the end of the sentence or the next verb (a list of names goes on)."""
    end = re.search(r"[;!?]|\.(?:\s|$)|" + _VERB.pattern[4:], text)
    return text[: end.start()] if end else text


def _clause(text: str) -> str:
    """Words up to the end of the clause (a comma, a full stop, 'and', 'then')."""
    end = _END.search(text)
    return text[: end.start()] if end else text


def _object(after: str) -> tuple[list[str], Ecosystem | None, bool]:
    """Names after an add/remove verb, the ecosystem named, and whether 'missing' was said."""
    names: list[str] = []
    hint: Ecosystem | None = None
    missing = False
    for token in _tokens(after):
        low = token.lower()
        if low in _SCOPE and names:
            break
        if low in _HINTS:
            hint = _HINTS[low]
        elif low in _MISSING:
            missing = True
        elif low not in _FILLER and low not in _SCOPE and low not in ("and", "or"):
            names.append(token)
    return names, hint, missing


def _version(text: str) -> str:
    m = VERSION.match(text)
    return m.group(1) if m else ""


def _split_version(token: str) -> tuple[str, str]:
    """``name==1.2``, ``name@1.2`` (not a scope's @) → (name, version)."""
    for sep in ("==", "@"):
        head, found, tail = token[1:].partition(sep) if sep == "@" else token.partition(sep)
        if found:
            name = token[0] + head if sep == "@" else head
            return name, tail
    return token, ""


def _package(verb: str, words: str, after: str, action: Action) -> Intent | None:
    sentence = _sentence(after)
    names, hint, missing = _object(sentence)
    words = f"{verb}{sentence}".strip()
    intent = Intent(action, words, ecosystem=hint.value if hint else "")
    if not names:
        if missing:
            return None  # "add the missing dependency": the failure's rules know which
        return intent.refuse(f"'{verb}' names no package: say which one, e.g. '{verb} requests'")
    if len(names) > 1:
        listing = ", ".join(names)
        return intent.refuse(f"several names ({listing}): one package per run")
    if names[0].lower() in _PRONOUNS:
        return intent.refuse(f"'{verb} {names[0]}' names no package: say which one")
    name, version = _split_version(names[0])
    if version and not VERSION.match(version):
        return intent.refuse(f"'{version}' is not a version number")
    if action is Action.REMOVE and version:
        return intent.refuse("a removal takes a name, not a version")
    if not (PYTHON_NAME.match(name) or NPM_NAME.match(name)):
        return intent.refuse(f"'{name}' is not a valid package name")
    return replace(intent, name=name, value=_version(version) if version else "")


_PIN = re.compile(
    r"(?i)^\s*(?P<name>[@\w./-]+?)(?:\s*(?:==|@)\s*|\s+(?:to|at|==)\s+(?:version\s+)?|\s+)"
    r"(?P<version>v?\d[\w.]*)(?P<rest>.*)$"
)
_PIN_FILLER = r"(?i)^\s*(?:the\s+)?(?:(?:python|pip|node|npm)\s+(?:package|dependency)\s+)?"


def _pin(words: str, after: str) -> Intent:
    intent = Intent(Action.PIN, words)
    clause = _clause(after.replace(" and ", " & "))
    m = _PIN.match(re.sub(_PIN_FILLER, " ", clause))
    if m is None:
        return intent.refuse("'pin' needs a name and a version, e.g. 'pin flask to 3.0.3'")
    name, version = m.group("name"), m.group("version")
    others = [v for v in re.findall(r"\bv?\d+(?:\.\d+)+\w*", m.group("rest")) if v != version]
    if others:
        return intent.refuse(f"two versions for {name} ({version}, {others[0]}): name one")
    if not VERSION.match(version):
        return intent.refuse(f"'{version}' is not a version number")
    if not (PYTHON_NAME.match(name) or NPM_NAME.match(name)):
        return intent.refuse(f"'{name}' is not a valid package name")
    hint = re.search(r"(?i)\b(python|pip|node|npm)\s+(?:package|dependency)\b", clause)
    ecosystem = _HINTS[hint.group(1).lower()].value if hint else ""
    return replace(intent, name=name, value=_version(version), ecosystem=ecosystem)


_ASSIGN = re.compile(
    r"^\s*(?:(?:the\s+)?(?:env(?:ironment)?(?:\s+variable)?|variable|var)\s+)?"
    r"`?(?P<name>[A-Za-z_]\w*)`?(?:\s*=\s*|\s+(?:to|as)\s+)"
    r"(?P<value>\"[^\"\n]*\"|'[^'\n]*'|[^\s\"',;]+)"
)


def _set(words: str, after: str) -> Intent | None:
    intent = Intent(Action.SET_ENV, words)
    m = _ASSIGN.match(after)
    if m is None:
        if re.match(r"(?i)\s*(?:the\s+)?base\s+image\b", after):
            return _base_image(words, re.sub(r"(?i)^\s*(?:the\s+)?base\s+image", "", after))
        first = _tokens(after)[:1]
        if first and ENV_NAME.match(first[0]) and first[0].isupper():
            return intent.refuse(f"no value for {first[0]}: say '{first[0]}=value'")
        if first and first[0].lower() in _PRONOUNS:
            return intent.refuse("'set' names no variable: say 'set NAME=value'")
        return None
    name, value = m.group("name"), m.group("value")
    if value[:1] in "\"'" and value[:1] == value[-1:]:
        value = value[1:-1]
    else:
        value = value.rstrip(".")
    again = re.findall(rf"(?<![\w$]){re.escape(name)}\s*=\s*([^\s,;]+)", after[m.end() :])
    if again and again[0].strip("\"'") != value:
        return intent.refuse(f"two values for {name} ({value}, {again[0]}): name one")
    if not value.isprintable():
        return intent.refuse(f"the value for {name} is not printable text")
    return replace(intent, name=name, value=value)


def _base_image(words: str, after: str) -> Intent | None:
    intent = Intent(Action.BASE_IMAGE, words)
    said_image = re.search(r"(?i)\bimage\b", words + after)
    text = re.sub(r"(?i)^\s*(?:(?:the|a|as|to|base|image|from)\s+)*", "", _clause(after))
    refs = [t for t in _tokens(text) if IMAGE_REF.match(t) and (":" in t or "@" in t)]
    if not refs:
        if said_image:
            return intent.refuse("no image named: say 'use <image>:<tag>'")
        return None
    if len(set(refs)) > 1:
        return intent.refuse(f"two images ({refs[0]}, {refs[1]}): name one")
    return replace(intent, name=refs[0])


def _intent_at(verb: str, words: str, after: str) -> Intent | None:
    low = verb.lower()
    if low in ("add", "install"):
        return _package(low, words, after, Action.ADD)
    if low in ("remove", "uninstall", "drop", "delete"):
        return _package(low, words, after, Action.REMOVE)
    if low == "pin":
        return _pin(words, after)
    if low == "set":
        return _set(words, after)
    if low in ("use", "switch", "change", "upgrade"):
        return _base_image(words, after)
    return None


def parse_intent(instruction: str) -> Intent | None:
    """The one change the instruction asks for; None when it asks for none we know."""
    found: list[Intent] = []
    for m in _VERB.finditer(instruction):
        after = instruction[m.end() :]
        words = (m.group(1) + _clause(after)).strip()
        intent = _intent_at(m.group(1), words, after)
        if intent is not None:
            found.append(intent)
    if len(found) > 1:
        names = "; ".join(f"'{i.words}'" for i in found)
        return replace(found[0], refused=f"several changes asked ({names}): one per run")
    return found[0] if found else None
