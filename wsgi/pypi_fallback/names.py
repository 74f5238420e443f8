"""Project names and distribution filenames.

packaging owns the specs (PEP 503 normalization, PEP 427 wheel names, PEP 625
sdist names); this module adds the safety checks a server needs before a
filename is used as a path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, NewType

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

from .errors import InvalidFilename, InvalidName

__all__ = [
    "Dist",
    "NormalizedName",
    "RepoName",
    "canonicalize_name",
    "is_normalized_name",
    "parse_dist_filename",
    "parse_project_name",
    "parse_normalized_name",
    "check_safe_filename",
]

# A repository's name, as ``[repos.<name>]`` in the config declares it (checked there:
# lowercase letters, digits and '-'); a plain str is a name not checked yet.
RepoName = NewType("RepoName", str)

MAX_FILENAME_BYTES = 255
METADATA_SUFFIX = ".metadata"  # PEP 658: <file>.metadata beside each wheel
# What may be kept beside a file: its PEP 658 metadata, PEP 740 provenance, the uploader's
# attestations. A filename leaves room for the longest.
COMPANION_SUFFIXES = (METADATA_SUFFIX, ".provenance", ".attestations")
MAX_DIST_FILENAME_BYTES = MAX_FILENAME_BYTES - max(len(s) for s in COMPANION_SUFFIXES)
EXTENSIONS = (".whl", ".tar.gz", ".zip")
_CONTROL = re.compile("[\x00-\x1f\x7f]")

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


def parse_project_name(name: str, where: str = "name") -> NormalizedName:
    """The normalized form of a project name from anywhere outside (a form, a filename,
    core metadata, a folder, an upstream listing, a URL, a command's argument).

    Only a valid PEP 508 name passes (packaging's check: ASCII letters and digits, with
    ``.``, ``_`` or ``-`` inside); anything else, a space, ``;``, ``%``, a quote, a tab, a
    non-ASCII letter, is refused before the name is used for anything."""
    if not isinstance(name, str) or not name.isascii() or not name.isprintable():
        raise InvalidName(f"Invalid project {where} {name!r}: only ASCII letters, digits, "
                          "'.', '_' and '-' are allowed")
    try:
        return canonicalize_name(name, validate=True)
    except ValueError:
        raise InvalidName(f"Invalid project {where} {name!r}: a project name is ASCII letters "
                          "and digits, with '.', '_' or '-' only between them (PEP 508)"
                          ) from None


def parse_normalized_name(name: str, where: str = "name") -> NormalizedName:
    """A project name that must already be normalized (a URL path, a folder, a state file
    key): valid, and equal to its normalized form."""
    project = parse_project_name(name, where)
    if project != name:
        raise InvalidName(f"Invalid project {where} {name!r}: not normalized "
                          f"(PEP 503: {project!r})")
    return project


def companion_fits(filename: str, suffix: str) -> bool:
    """Whether ``<filename><suffix>`` is a name the file system takes."""
    return len((filename + suffix).encode("utf-8", "surrogateescape")) <= MAX_FILENAME_BYTES


def check_safe_filename(filename: str) -> None:
    """Refuse a filename that could escape its folder or confuse a reader."""
    if not filename:
        raise InvalidFilename("Invalid filename: empty")
    limit = MAX_DIST_FILENAME_BYTES
    if len(filename.encode("utf-8", "surrogateescape")) > limit:
        raise InvalidFilename(
            f"Invalid filename: longer than {limit} bytes (the limit of the file system, less "
            f"room for the files kept beside it, {', '.join(COMPANION_SUFFIXES)}): "
            f"{filename[:40]!r}…"
        )
    if _CONTROL.search(filename):
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
    """Parse a wheel or sdist filename, after the safety checks; the project name in it
    must be a valid PEP 508 name (packaging's sdist parser does not check that)."""
    check_safe_filename(filename)
    kind: DistKind
    try:
        if filename.endswith(".whl"):
            _name, version, _build, _tags = parse_wheel_filename(filename)
            raw, kind = filename.split("-", 1)[0], "wheel"
        else:
            _name, version = parse_sdist_filename(filename)
            stem = filename.removesuffix(".tar.gz").removesuffix(".zip")
            raw, kind = stem.rpartition("-")[0], "sdist"
    except (InvalidWheelFilename, InvalidSdistFilename) as exc:
        raise InvalidFilename(f"Invalid distribution filename {filename!r}: {exc}") from None
    try:
        project = parse_project_name(raw, "name in filename")
    except InvalidName as exc:
        raise InvalidFilename(f"Invalid distribution filename {filename!r}: {exc}") from None
    return Dist(filename, project, version, kind)
