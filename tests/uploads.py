"""Upload forms built the way twine builds them."""

from __future__ import annotations

import hashlib
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
