"""The replica fill's pure parts: which paths it takes, which answers it keeps, and how a
Location of the primary is pointed at the replica."""

from __future__ import annotations

import email
import http.client
import re
from pathlib import Path

import pytest
from pypi_fallback.replica import (
    FILE_RE,
    ReplicaSettings,
    parse_file_path,
    replica_location,
    storable,
)

SETTINGS = ReplicaSettings(primary="https://primary.example/pypi/", files=Path("/srv/files"),
                           timeout=600)
IMMUTABLE = "public, max-age=31536000, immutable"


@pytest.mark.parametrize(("path", "parsed"), [
    ("/stable/acme/acme-1.0-py3-none-any.whl", ("stable", "acme", "acme-1.0-py3-none-any.whl")),
    ("/dev/acme/acme-1.0.tar.gz", ("dev", "acme", "acme-1.0.tar.gz")),
    ("/dev/acme/acme-1.0+local.zip", ("dev", "acme", "acme-1.0+local.zip")),
    ("/dev/acme/acme-1.0-py3-none-any.whl.metadata",
     ("dev", "acme", "acme-1.0-py3-none-any.whl.metadata")),
    ("/dev/acme/index.html", None),            # a listing: mod_cache's
    ("/dev/acme/", None),
    ("/dev/acme/.acme-1.0.whl.1234.tmp", None),  # a temporary file
    ("/dev/acme/.acme-1.0.whl", None),
    ("/dev/../acme-1.0.whl", None),
    ("/dev/acme/sub/acme-1.0.whl", None),
    ("/dev/acme-1.0.whl", None),
    ("/dev/acme/acme 1.0.whl", None),
])
def test_which_paths_the_fill_takes(path: str, parsed: tuple[str, str, str] | None) -> None:
    assert parse_file_path(path) == parsed
    # the drop-in's rewrite pattern takes exactly the same paths
    assert bool(re.fullmatch(FILE_RE, path.strip("/"))) == (parsed is not None)


def message(**headers: str) -> http.client.HTTPMessage:
    text = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    return email.message_from_string(text, _class=http.client.HTTPMessage)  # type: ignore[return-value]


@pytest.mark.parametrize(("status", "headers", "kept"), [
    (200, {"Cache_Control": IMMUTABLE, "Content_Length": "10"}, True),
    (200, {"Cache_Control": "private, max-age=31536000, immutable", "Content_Length": "10"},
     False),
    (200, {"Cache_Control": "public, max-age=30", "Content_Length": "10"}, False),
    (200, {"Cache_Control": IMMUTABLE + ", no-store", "Content_Length": "10"}, False),
    (200, {"Cache_Control": IMMUTABLE}, False),  # no length: a short body would look whole
    (200, {"Cache_Control": IMMUTABLE, "Content_Length": "10", "Content_Encoding": "gzip"},
     False),
    (302, {"Cache_Control": IMMUTABLE, "Content_Length": "10"}, False),
    (404, {"Cache_Control": "public, max-age=30", "Content_Length": "10"}, False),
])
def test_which_answers_are_kept(status: int, headers: dict[str, str], kept: bool) -> None:
    assert storable(status, message(**headers)) is kept


@pytest.mark.parametrize(("location", "expected"), [
    ("https://primary.example/pypi/stable/acme/acme-1.0.whl",
     "http://replica.example:8080/pypi/stable/acme/acme-1.0.whl"),
    ("https://primary.example/pypi", "http://replica.example:8080/pypi"),
    ("https://primary.example/pypiother/x", "https://primary.example/pypiother/x"),
    ("https://upstream.example/simple/acme/", "https://upstream.example/simple/acme/"),
])
def test_a_location_at_the_primary_points_at_the_replica(location: str, expected: str) -> None:
    environ = {"HTTP_HOST": "replica.example:8080", "SERVER_NAME": "replica.example",
               "wsgi.url_scheme": "http"}
    assert replica_location(location, SETTINGS, environ) == expected
