"""The release-age cooldown: which upstream files are old enough to be offered.

``policy.min_age`` (a duration such as ``"7d"``), ``policy.freeze`` (a date or time: nothing
uploaded after it) and ``policy.exceptions`` (break-glass: ``name`` or ``name==version``).
Pure values and functions; the config module parses, the listings and the fetch route ask.
Local files are never judged here: only files that come from the upstream.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from .errors import ConfigError, PyPIFallbackError
from .names import NormalizedName, parse_project_name

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")


@dataclass(frozen=True)
class Exemption:
    """One break-glass exception: a whole project, or one release of it."""

    project: NormalizedName
    version: Version | None
    text: str  # as written in the config, for the audit log

    def covers(self, project: str, version: str) -> bool:
        if project != self.project:
            return False
        if self.version is None:
            return True
        try:
            return Version(version) == self.version
        except InvalidVersion:
            return False


@dataclass(frozen=True)
class Verdict:
    admitted: bool
    exception: str | None = None  # the exception that admitted a file too young otherwise
    reason: str | None = None  # why a file is left out


@dataclass(frozen=True)
class Cooldown:
    min_age: float = 0.0  # seconds; 0: no minimum age
    freeze: float | None = None  # epoch seconds: nothing uploaded after it
    exceptions: tuple[Exemption, ...] = ()
    min_age_text: str = ""

    @property
    def active(self) -> bool:
        return self.min_age > 0 or self.freeze is not None

    def cutoff(self, now: float) -> float | None:
        """The newest upload time offered now (None: no limit)."""
        limits = [t for t in (now - self.min_age if self.min_age else None, self.freeze)
                  if t is not None]
        return min(limits) if limits else None

    def judge(self, project: str, version: str, upload_time: str | None, now: float
              ) -> Verdict:
        """Whether an upstream file is offered now. A file without an upload time cannot be
        shown to be old enough: it is left out while a cooldown is active."""
        cutoff = self.cutoff(now)
        if cutoff is None:
            return Verdict(True)
        uploaded = parse_time(upload_time) if upload_time else None
        if uploaded is not None and uploaded <= cutoff:
            return Verdict(True)
        for exc in self.exceptions:
            if exc.covers(project, version):
                return Verdict(True, exception=exc.text)
        if uploaded is None:
            return Verdict(False, reason="the upstream gives no upload time, so its age is "
                                         "unknown (policy.min_age / policy.freeze)")
        when = format_time(uploaded)
        if self.freeze is not None and uploaded > self.freeze:
            return Verdict(False, reason=f"uploaded {when}, after policy.freeze "
                                         f"{format_time(self.freeze)}")
        return Verdict(False, reason=f"uploaded {when}, younger than policy.min_age "
                                     f"{self.min_age_text}; offered from "
                                     f"{format_time(uploaded + self.min_age)}")


def parse_time(text: str) -> float | None:
    """A PEP 700 upload time (ISO 8601; naive means UTC) as epoch seconds, else None."""
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def format_time(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_duration(text: str) -> float:
    """``"7d"``, ``"36h"``, ``"1w 2d"``, ``"0"``: seconds. ValueError otherwise."""
    text = text.strip().lower()
    if text in ("0", ""):
        return 0.0
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if text[pos:match.start()].strip():
            raise ValueError(text)
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos == 0 or text[pos:].strip():
        raise ValueError(text)
    return total


def parse_cooldown(source: Path, policy: dict[str, Any]) -> Cooldown:
    """The cooldown keys of ``[policy]`` (already type-checked); ConfigError names the key."""
    min_age_text = policy.get("min_age", "0")
    try:
        min_age = parse_duration(min_age_text)
    except ValueError:
        raise ConfigError(f"{source}: policy.min_age must be a duration such as \"7d\", "
                          f"\"36h\" or \"0\" (units s, m, h, d, w), not {min_age_text!r}"
                          ) from None
    freeze = _parse_freeze(source, policy.get("freeze"))
    exceptions = tuple(_parse_exception(source, text)
                       for text in policy.get("exceptions", ()))
    return Cooldown(min_age, freeze, exceptions, min_age_text.strip())


def _parse_freeze(source: Path, value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = dt.date.fromisoformat(value.strip()) if len(value.strip()) == 10 else \
                dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise ConfigError(f"{source}: policy.freeze must be a date (2026-11-01) or a time "
                              f"(2026-11-01T12:00:00Z), not {value!r}") from None
    if isinstance(value, dt.datetime):
        when = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return when.timestamp()
    if isinstance(value, dt.date):  # a date: its first moment, UTC
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC).timestamp()
    raise ConfigError(f"{source}: policy.freeze must be a date or a time, not {value!r}")


def _parse_exception(source: Path, text: str) -> Exemption:
    name, sep, version = text.partition("==")
    try:
        project = parse_project_name(name.strip(), "name")
        parsed = Version(version.strip()) if sep else None
    except (PyPIFallbackError, InvalidVersion):
        raise ConfigError(f"{source}: policy.exceptions: {text!r} is not 'name' or "
                          "'name==version'") from None
    return Exemption(project, parsed, text.strip())


def describe(cooldown: Cooldown) -> Iterable[str]:
    """The policy in words (for the operator)."""
    if cooldown.min_age:
        yield f"upstream files younger than {cooldown.min_age_text} are left out"
    if cooldown.freeze is not None:
        yield f"upstream files uploaded after {format_time(cooldown.freeze)} are left out"
    for exc in cooldown.exceptions:
        yield f"exception: {exc.text}"
