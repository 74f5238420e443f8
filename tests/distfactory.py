"""Build real, small wheels and sdists for tests and benchmarks."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

from packaging.utils import canonicalize_name


def metadata_text(name: str, version: str, requires_python: str | None = None) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
             "Summary: a test package"]
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    return "\n".join(lines) + "\n\n"


def wheel_bytes(name: str, version: str, *, requires_python: str | None = None,
                metadata: str | None = None, omit: tuple[str, ...] = (),
                extra: dict[str, bytes] | None = None, payload: bytes = b"") -> bytes:
    """A valid pure-Python wheel (PEP 427) that pip can install."""
    dist = canonicalize_name(name).replace("-", "_")
    module = dist
    dist_info = f"{dist}-{version}.dist-info"
    files: dict[str, bytes] = {
        f"{module}/__init__.py": f"VERSION = {version!r}\n".encode() + payload,
        f"{dist_info}/METADATA": (metadata or metadata_text(name, version, requires_python))
        .encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n",
    }
    files.update(extra or {})
    record_lines = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record_lines.append(f"{path},sha256={digest},{len(data)}")
    record_lines.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record_lines) + "\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in files.items():
            if path.rsplit("/", 1)[-1] not in omit:
                # a fixed timestamp: the same arguments always give the same bytes
                info = zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, data)
    return buf.getvalue()


def wheel_name(name: str, version: str) -> str:
    return f"{canonicalize_name(name).replace('-', '_')}-{version}-py3-none-any.whl"


def sdist_name(name: str, version: str) -> str:
    return f"{canonicalize_name(name).replace('-', '_')}-{version}.tar.gz"


def sdist_bytes(name: str, version: str, *, requires_python: str | None = None,
                members: dict[str, bytes] | None = None) -> bytes:
    top = sdist_name(name, version)[: -len(".tar.gz")]
    files = {f"{top}/PKG-INFO": metadata_text(name, version, requires_python).encode(),
             f"{top}/setup.py": b"from setuptools import setup\nsetup()\n"}
    if members is not None:
        files = members
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_wheel(folder: Path, name: str, version: str, **kw: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / wheel_name(name, version)
    path.write_bytes(wheel_bytes(name, version, **kw))  # type: ignore[arg-type]
    return path


def write_sdist(folder: Path, name: str, version: str, **kw: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / sdist_name(name, version)
    path.write_bytes(sdist_bytes(name, version, **kw))  # type: ignore[arg-type]
    return path
