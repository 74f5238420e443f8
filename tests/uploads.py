"""Upload forms built the way twine builds them."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from packaging.utils import parse_sdist_filename, parse_wheel_filename


def twine_fields(filename: str, data: bytes, **overrides: Any) -> list[tuple[str, str]]:
    try:
        if filename.endswith(".whl"):
            name, version, *_ = parse_wheel_filename(filename)
            filetype, pyversion = "bdist_wheel", "py3"
        else:
            name, version = parse_sdist_filename(filename)
            filetype, pyversion = "sdist", "source"
    except ValueError:  # a bad filename on purpose: the test gives name and version
        name, version, filetype, pyversion = "acme", "1.0", "sdist", "source"
    fields: dict[str, Any] = {
        ":action": "file_upload",
        "protocol_version": "1",
        "metadata_version": "2.1",
        "name": name,
        "version": str(version),
        "filetype": filetype,
        "pyversion": pyversion,
        "summary": "a test package",
        "sha256_digest": hashlib.sha256(data).hexdigest(),
        "blake2_256_digest": hashlib.blake2b(data, digest_size=32).hexdigest(),
    }
    fields.update(overrides)
    return [(k, v) for k, v in fields.items() if v is not None]


def multipart(fields: list[tuple[str, str]], filename: str, data: bytes,
              boundary: str | None = None) -> tuple[str, bytes]:
    """A multipart body as any client, hostile ones included, could send it: names, values
    and the filename go in as UTF-8, unquoted (WebTest's own encoder takes ASCII names)."""
    boundary = boundary or uuid.uuid4().hex
    parts = []
    for key, value in fields:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'
                     f"{value}\r\n".encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="content"; '
                 f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                 .encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(parts)
