"""Project names and distribution filenames.

packaging owns the specs (PEP 503 normalization, PEP 427 wheel names, PEP 625
sdist names); this module adds the safety checks a server needs before a
filename is used as a path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    is_normalized_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

from .errors import InvalidFilename

__all__ = [
    "Dist",
    "NormalizedName",
    "canonicalize_name",
    "is_normalized_name",
    "parse_dist_filename",
    "check_safe_filename",
]

MAX_FILENAME_BYTES = 255
EXTENSIONS = (".whl", ".tar.gz", ".zip")

DistKind = Literal["wheel", "sdist"]


@dataclass(frozen=True)
class Dist:
    """A parsed distribution filename."""

    filename: str
    project: NormalizedName
    version: Version
    kind: DistKind

    @property
    def packagetype(self) -> str:
        """The name twine and Warehouse use for this kind of file."""
        return "bdist_wheel" if self.kind == "wheel" else "sdist"


def check_safe_filename(filename: str) -> None:
    """Refuse a filename that could escape its folder or confuse a reader."""
    if not filename:
        raise InvalidFilename("Invalid filename: empty")
    if len(filename.encode("utf-8", "surrogateescape")) > MAX_FILENAME_BYTES:
        raise InvalidFilename(
            f"Invalid filename: longer than {MAX_FILENAME_BYTES} bytes: {filename[:40]!r}…"
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in filename):
        raise InvalidFilename(f"Invalid filename: control character in {filename!r}")
    if "/" in filename or "\\" in filename:
        raise InvalidFilename(f"Invalid filename: path separator in {filename!r}")
    if ".." in filename or filename.startswith("."):
        raise InvalidFilename(f"Invalid filename: {filename!r} looks like a path trick")
    if not filename.endswith(EXTENSIONS):
        raise InvalidFilename(
            f"Invalid file extension: {filename!r}; use one of {', '.join(EXTENSIONS)}"
        )


def parse_dist_filename(filename: str) -> Dist:
    """Parse a wheel or sdist filename, after the safety checks."""
    check_safe_filename(filename)
    try:
        if filename.endswith(".whl"):
            name, version, _build, _tags = parse_wheel_filename(filename)
            return Dist(filename, name, version, "wheel")
        name, version = parse_sdist_filename(filename)
    except (InvalidWheelFilename, InvalidSdistFilename) as exc:
        raise InvalidFilename(f"Invalid distribution filename {filename!r}: {exc}") from None
    return Dist(filename, name, version, "sdist")
