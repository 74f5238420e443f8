"""The replica fill's pure parts: which paths it takes, which answers it keeps, and how a
Location of the primary is pointed at the replica."""

from __future__ import annotations

import email
import fnmatch
import http.client
import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest
from pypi_fallback import storage
from pypi_fallback.replica import (
    FILE_RE,
    ROUTE_FLAG,
    ReplicaSettings,
    parse_file_path,
    replica_location,
    serve_file,
    storable,
)

SETTINGS = ReplicaSettings(primary="https://primary.example/pypi/", files=Path("/srv/files"))
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
    # cache mode's files of the upstream index
    ("/+upstream/acme/acme-1.0.tar.gz", ("+upstream", "acme", "acme-1.0.tar.gz")),
    ("/+upstream/acme/acme-1.0.whl.metadata",
     ("+upstream", "acme", "acme-1.0.whl.metadata")),
    ("/+pages/acme/acme-1.0.whl", None),
    ("/dev/+upstream/acme-1.0.whl", None),
    ("/dev/acme/+acme-1.0.whl", None),
    ("/dev/acme/" + "a" * 251 + ".whl", ("dev", "acme", "a" * 251 + ".whl")),
])
def test_which_paths_the_fill_takes(path: str, parsed: tuple[str, str, str] | None) -> None:
    assert parse_file_path(path) == parsed
    # the drop-in's rewrite pattern takes exactly the same paths
    assert bool(re.fullmatch(FILE_RE, path.strip("/"))) == (parsed is not None)



def test_a_name_longer_than_any_file_system_takes_is_a_404_not_an_error() -> None:
    """The drop-in sends it to the fill (its pattern has no length), which answers 404
    as the primary does, where a look at the folder would fail (ENAMETOOLONG)."""
    path = "/dev/acme/" + "a" * 252 + ".whl"
    assert re.fullmatch(FILE_RE, path.strip("/"))
    assert parse_file_path(path) is None
    answers: list[str] = []
    environ = {ROUTE_FLAG: "1", "REQUEST_METHOD": "GET", "PATH_INFO": path}
    serve_file(SETTINGS, environ, lambda status, headers: answers.append(status))
    assert answers == ["404 Not Found"]


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


@pytest.mark.parametrize("request_uri", [
    "/pypi/+upstream/acme/acme-1.0%2Blocal.zip",
    "http://replica.example/pypi/+upstream/acme/acme-1.0%2Blocal.zip",  # absolute form
    "/pypi/%2Bupstream/acme/acme-1.0+local.zip",
])
def test_a_file_already_there_is_handed_back_to_apache_by_its_path(
        tmp_path: Path, request_uri: str) -> None:
    """The internal redirect names the file's path, whatever form the request took."""
    settings = ReplicaSettings(primary="http://127.0.0.1:9/pypi/", files=tmp_path)
    (tmp_path / "+upstream" / "acme").mkdir(parents=True)
    (tmp_path / "+upstream" / "acme" / "acme-1.0+local.zip").write_bytes(b"zip")
    answers: list[tuple[str, list[tuple[str, str]]]] = []
    environ = {ROUTE_FLAG: "1", "REQUEST_METHOD": "GET", "REQUEST_URI": request_uri,
               "PATH_INFO": "/+upstream/acme/acme-1.0+local.zip"}
    body = serve_file(settings, environ, lambda status, headers: answers.append(
        (status, headers)))
    assert list(body) == [b""]
    assert answers == [("200 OK", [("Location", "/pypi/+upstream/acme/acme-1.0+local.zip"),
                                   ("Content-Type", "text/plain")])]


README = Path(__file__).resolve().parent.parent / "README.md"
REPLICA_FILES = "/var/cache/pypi-fallback/replica"


def readme_line(start: str) -> str:
    lines = [line for line in README.read_text().splitlines() if line.startswith(start)]
    assert len(lines) == 1, f"{start!r} starts {len(lines)} lines of the README"
    return lines[0]


def test_the_readmes_cron_line_removes_old_temporary_files_and_unread_files(
        tmp_path: Path) -> None:
    line = readme_line(f"find {REPLICA_FILES} ")
    folder = tmp_path / "files" / "stable" / "acme"
    folder.mkdir(parents=True)
    day = 24 * 3600
    now = time.time()
    names = {}
    for what, name, age in [
            ("old tmp", storage.tmp_path(folder / "acme-1.0.whl").name, 2 * day),
            ("new tmp", storage.tmp_path(folder / "acme-1.1.whl").name, 60),
            ("unread", "acme-0.9.whl", 31 * day),
            ("read", "acme-1.0.whl", 2 * day)]:
        (folder / name).write_bytes(b"x")
        os.utime(folder / name, (now - age, now - age))
        names[what] = name
    # the pattern is the one temporary files are made with
    assert fnmatch.fnmatch(names["old tmp"], re.findall(r"-name '([^']*)'", line)[0])
    assert names["old tmp"].startswith(storage.TMP_PREFIX)
    done = subprocess.run(line.replace(REPLICA_FILES, shlex.quote(str(tmp_path / "files"))),
                          shell=True, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(folder)) == sorted([names["new tmp"], names["read"]])
