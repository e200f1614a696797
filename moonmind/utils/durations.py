"""Durations written the way operators write them: ``30d``, ``12h``, ``90m``, ``45s``."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (a number followed by s, m, h, d or w); ValueError otherwise."""
    found = _DURATION.match(text)
    if found is None:
        raise ValueError(f"not a duration: {text!r} (write e.g. 30d, 12h, 90m or 45s)")
    seconds = float(found.group(1)) * _UNITS[found.group(2).lower()]
    if seconds <= 0:
        raise ValueError(f"a duration must be more than zero: {text!r}")
    return seconds


def _seconds(value: Any) -> Any:
    """A duration string becomes seconds; a number is taken as seconds already."""
    return parse_duration(value) if isinstance(value, str) else value


def _seconds_or_none(value: Any) -> Any:
    """The same, and an empty string is None (the setting is off)."""
    return None if isinstance(value, str) and not value.strip() else _seconds(value)


# A setting holding a duration: "30d" in config.toml or the environment, seconds in Python.
DurationSeconds = Annotated[float, BeforeValidator(_seconds)]
# The same, where empty means "off" (None).
OptionalDurationSeconds = Annotated[float | None, BeforeValidator(_seconds_or_none)]
