"""Look inside a distribution: a valid, safe archive whose metadata matches its name.

Pure functions over a file path; nothing here writes. Caps keep a zip or tar
bomb from costing more than a bounded amount of memory and time.
"""

from __future__ import annotations

import gzip
import io
import stat
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from packaging.metadata import RawMetadata, parse_email
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .errors import InvalidArchive, MetadataMismatch
from .names import Dist, parse_project_name

MAX_METADATA_BYTES = 10 * 1024 * 1024
MAX_MEMBERS = 100_000
MAX_UNCOMPRESSED_BYTES = 8 * 1024 * 1024 * 1024
MAX_RATIO = 200  # uncompressed / compressed, checked once over 64 MiB uncompressed
RATIO_FLOOR = 64 * 1024 * 1024


@dataclass(frozen=True)
class CoreMetadata:
    """What a listing needs from inside a distribution."""

    name: str
    version: str
    requires_python: str | None
    raw: bytes  # METADATA / PKG-INFO as found (served as PEP 658 metadata for wheels)
    # every field ``packaging`` parsed from ``raw`` (what a page shows: parsed once)
    fields: RawMetadata = field(default_factory=lambda: RawMetadata(), compare=False,
                                repr=False)


def inspect_dist(path: Path, dist: Dist, data: bytes | None = None) -> CoreMetadata:
    """Validate the archive at ``path`` and return its metadata, which must match ``dist``.
    ``data``: the file's bytes, when the caller has read them already (it is not read again)."""
    source: Path | io.BytesIO = path if data is None else io.BytesIO(data)
    try:
        size = path.stat().st_size if data is None else len(data)
        if dist.filename.endswith(".whl"):
            meta = _wheel_metadata(source, size, dist)
        elif dist.filename.endswith(".zip"):
            meta = _zip_sdist_metadata(source, size, dist)
        else:
            meta = _tar_sdist_metadata(source, size, dist)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, (InvalidArchive, MetadataMismatch)):
            raise
        raise InvalidArchive(f"Invalid distribution file {dist.filename!r}: {exc}") from None
    check_metadata_matches(meta, dist)
    return meta


def check_metadata_matches(meta: CoreMetadata, dist: Dist) -> None:
    if parse_project_name(meta.name, "name in metadata") != dist.project:
        raise MetadataMismatch(
            f"Name in metadata {meta.name!r} does not match filename {dist.filename!r}"
        )
    try:
        version = Version(meta.version)
    except InvalidVersion:
        raise MetadataMismatch(f"Invalid version in metadata: {meta.version!r}") from None
    if version != dist.version:
        raise MetadataMismatch(
            f"Version in metadata {meta.version!r} does not match filename {dist.filename!r}"
        )


def parse_metadata(raw: bytes, where: str) -> CoreMetadata:
    """Read the few fields a listing needs from core metadata, with packaging's parser.

    Name and Version must be there; Requires-Python, which listings show to installers,
    must be a valid specifier set (PEP 440), or the file is refused."""
    fields, _unparsed = parse_email(raw)
    name, version = fields.get("name"), fields.get("version")
    if not name or not version:
        raise InvalidArchive(f"{where} has no Name or Version")
    requires = fields.get("requires_python")
    if requires is not None:
        try:
            SpecifierSet(requires)
        except InvalidSpecifier:
            raise InvalidArchive(f"{where}: invalid Requires-Python {requires!r}") from None
    return CoreMetadata(name.strip(), version.strip(), requires.strip() if requires else None,
                        raw, fields)


def _check_member_name(name: str, filename: str) -> None:
    posix = name.replace("\\", "/")  # (string operations: once per member of every archive)
    drive = len(name) > 1 and name[1] == ":"
    if posix.startswith("/") or ".." in posix.split("/") or drive or "\0" in name:
        raise InvalidArchive(f"Unsafe path {name!r} inside {filename!r}")


def _check_zip(zf: zipfile.ZipFile, filename: str, compressed: int) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise InvalidArchive(f"Too many files inside {filename!r}")
    total = 0
    for info in infos:
        _check_member_name(info.filename, filename)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise InvalidArchive(f"Symbolic link {info.filename!r} inside {filename!r}")
        total += info.file_size
    _check_ratio(total, compressed, filename)
    return infos


def _check_ratio(total: int, compressed: int, filename: str) -> None:
    if total > MAX_UNCOMPRESSED_BYTES:
        raise InvalidArchive(f"{filename!r} unpacks to more than the allowed size")
    if total > RATIO_FLOOR and total > MAX_RATIO * max(compressed, 1):
        raise InvalidArchive(f"{filename!r} looks like a zip bomb (compression ratio too high)")


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, filename: str) -> bytes:
    if info.file_size > MAX_METADATA_BYTES:
        raise InvalidArchive(f"{info.filename!r} inside {filename!r} is too large")
    with zf.open(info) as f:
        data = f.read(MAX_METADATA_BYTES + 1)
    if len(data) > MAX_METADATA_BYTES:
        raise InvalidArchive(f"{info.filename!r} inside {filename!r} is too large")
    return data


def _wheel_metadata(path: Path | io.BytesIO, size: int, dist: Dist) -> CoreMetadata:
    with zipfile.ZipFile(path) as zf:
        infos = _check_zip(zf, dist.filename, size)
        by_name = {i.filename: i for i in infos}
        dist_infos = {
            n.split("/", 1)[0]
            for n in by_name
            if "/" in n and n.split("/", 1)[0].endswith(".dist-info")
        }
        matching = [
            d for d in dist_infos
            if canonicalize_name(d[: -len(".dist-info")].rpartition("-")[0]) == dist.project
        ]
        if len(matching) != 1:
            raise InvalidArchive(
                f"Wheel {dist.filename!r} must hold exactly one .dist-info folder for its project"
            )
        top = matching[0]
        for required in ("WHEEL", "METADATA", "RECORD"):
            if f"{top}/{required}" not in by_name:
                raise InvalidArchive(f"Wheel {dist.filename!r} has no {top}/{required}")
        raw = _read_member(zf, by_name[f"{top}/METADATA"], dist.filename)
        return parse_metadata(raw, f"{dist.filename}: {top}/METADATA")


def _zip_sdist_metadata(path: Path | io.BytesIO, size: int, dist: Dist) -> CoreMetadata:
    with zipfile.ZipFile(path) as zf:
        infos = _check_zip(zf, dist.filename, size)
        candidates = [i for i in infos if i.filename.count("/") == 1
                      and i.filename.endswith("/PKG-INFO")]
        if not candidates:
            raise InvalidArchive(f"sdist {dist.filename!r} has no top-level PKG-INFO")
        raw = _read_member(zf, candidates[0], dist.filename)
        return parse_metadata(raw, f"{dist.filename}: PKG-INFO")


class _CappedReader(io.RawIOBase):
    """A file wrapper that fails once more than ``cap`` bytes were read through it."""

    def __init__(self, inner: IO[bytes] | gzip.GzipFile, cap: int, filename: str) -> None:
        self._inner, self._cap, self._filename, self.count = inner, cap, filename, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(len(buffer))
        self.count += len(data)
        if self.count > self._cap:
            raise InvalidArchive(f"{self._filename!r} unpacks to more than the allowed size")
        buffer[: len(data)] = data
        return len(data)


def _tar_sdist_metadata(path: Path | io.BytesIO, compressed: int, dist: Dist) -> CoreMetadata:
    cap = min(MAX_UNCOMPRESSED_BYTES, max(RATIO_FLOOR, MAX_RATIO * compressed))
    raw: bytes | None = None
    with gzip.open(path, "rb") as gz:
        capped = io.BufferedReader(_CappedReader(gz, cap, dist.filename), 1024 * 1024)
        with tarfile.open(fileobj=capped, mode="r|") as tf:
            for count, member in enumerate(tf, 1):
                if count > MAX_MEMBERS:
                    raise InvalidArchive(f"Too many files inside {dist.filename!r}")
                _check_member_name(member.name, dist.filename)
                if member.issym() or member.islnk():
                    target = PurePosixPath(member.linkname)
                    if target.is_absolute() or ".." in target.parts:
                        raise InvalidArchive(
                            f"Unsafe link {member.name!r} -> {member.linkname!r} "
                            f"inside {dist.filename!r}"
                        )
                if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
                    raise InvalidArchive(
                        f"Unsupported member type {member.name!r} inside {dist.filename!r}"
                    )
                if raw is None and member.isfile() and member.name.count("/") == 1 \
                        and member.name.endswith("/PKG-INFO"):
                    if member.size > MAX_METADATA_BYTES:
                        raise InvalidArchive(f"PKG-INFO inside {dist.filename!r} is too large")
                    f = tf.extractfile(member)
                    raw = f.read() if f else None
    if raw is None:
        raise InvalidArchive(f"sdist {dist.filename!r} has no top-level PKG-INFO")
    return parse_metadata(raw, f"{dist.filename}: PKG-INFO")
