"""The upload API on the WSGI app (WebTest): every rule, and the tree unchanged on rejection."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from distfactory import sdist_bytes, sdist_name, wheel_bytes, wheel_name
from helpers import post, snapshot
from pypi_fallback.app import RootRefresher, make_app
from pypi_fallback.config import Settings
from pypi_fallback.regen import regenerate
from uploads import twine_fields
from webtest import TestApp, TestRequest


@pytest.fixture
def app(settings: Settings) -> TestApp:
    return TestApp(make_app(settings))


def listing(settings: Settings, repo: str, project: str) -> dict[str, Any]:
    return json.loads((settings.root / repo / project / "index.v1_json").read_text())


def test_upload_publishes_file_listing_metadata_and_audit(app: TestApp,
                                                          settings: Settings) -> None:
    data = wheel_bytes("Acme.Widgets", "1.0", requires_python=">=3.9")
    name = wheel_name("acme-widgets", "1.0")
    resp = post(app, "dev", name, data, name="Acme.Widgets", status=200)
    assert "uploaded to dev" in resp.text

    folder = settings.root / "dev" / "acme-widgets"
    assert (folder / name).read_bytes() == data
    assert (folder / f"{name}.metadata").read_bytes().startswith(b"Metadata-Version")
    (entry,) = listing(settings, "dev", "acme-widgets")["files"]
    assert entry["filename"] == name and entry["requires-python"] == ">=3.9"
    assert entry["size"] == len(data) and entry["upload-time"].endswith("Z")
    root = json.loads((settings.root / "dev" / "index.v1_json").read_text())
    assert root["projects"] == [{"name": "acme-widgets"}]
    (line,) = (settings.state / "audit.jsonl").read_text().splitlines()
    audit = json.loads(line)
    assert audit["user"] == "alice" and audit["action"] == "upload"
    assert audit["filename"] == name and audit["repo"] == "dev" and audit["size"] == len(data)
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_upload_without_slash_and_sdist(app: TestApp, settings: Settings) -> None:
    data = sdist_bytes("acme", "1.0")
    app.post("/pypi/dev", params=twine_fields(sdist_name("acme", "1.0"), data),
             upload_files=[("content", sdist_name("acme", "1.0"), data)],
             extra_environ={"REMOTE_USER": "alice"}, status=200)
    assert (settings.root / "dev" / "acme" / "acme-1.0.tar.gz").exists()


def test_upload_into_stable_refreshes_dev_page(app: TestApp, settings: Settings) -> None:
    post(app, "dev", wheel_name("acme", "2.0"), wheel_bytes("acme", "2.0"), status=200)
    post(app, "stable", wheel_name("acme", "1.0"), wheel_bytes("acme", "1.0"), user="carol",
         status=200)
    files = [f["filename"] for f in listing(settings, "dev", "acme")["files"]]
    assert files == [wheel_name("acme", "2.0"), wheel_name("acme", "1.0")]


GOOD = wheel_bytes("acme", "1.0")
WHL = wheel_name("acme", "1.0")


@pytest.mark.parametrize(
    ("filename", "data", "fields", "status", "reason"),
    [
        ("../acme-1.0.tar.gz", GOOD, {}, 400, "path separator"),
        ("acme-1.0.exe", GOOD, {"name": "acme", "version": "1.0"}, 400, "Invalid file extension"),
        ("acme..-1.0.tar.gz", GOOD, {"name": "acme", "version": "1.0"}, 400, "path trick"),
        ("acme-1.0\x07.tar.gz", GOOD, {"name": "acme", "version": "1.0"}, 400,
         "control character"),
        (WHL, GOOD, {"name": "other"}, 400, "Name 'other' in the form does not match"),
        (WHL, GOOD, {"version": "1.1"}, 400, "Version '1.1' in the form does not match"),
        (WHL, wheel_bytes("acme", "1.0", metadata="Name: acme\nVersion: 9.0\n\n"), {}, 400,
         "Version in metadata '9.0' does not match"),
        (WHL, GOOD, {"sha256_digest": "0" * 64}, 400, "sha256_digest does not match"),
        (WHL, GOOD, {"blake2_256_digest": "0" * 64}, 400, "blake2_256_digest does not match"),
        (WHL, GOOD, {"sha256_digest": None, "blake2_256_digest": None}, 400,
         "Missing sha256_digest or blake2_256_digest"),
        (WHL, b"PK\x03\x04 not really", {}, 400, "Invalid distribution file"),
        (WHL, wheel_bytes("acme", "1.0", omit=("RECORD",)), {}, 400, "has no acme-1.0.dist-info"),
        (WHL, wheel_bytes("acme", "1.0", payload=os.urandom(3 * 1024 * 1024)), {}, 413,
         "File too large"),
        (WHL, GOOD, {":action": "submit"}, 410, "no longer supported"),
        (WHL, GOOD, {":action": "doc_upload"}, 410, "no longer supported"),
        (WHL, GOOD, {":action": "remove_pkg"}, 400, "Unknown or missing :action"),
        (WHL, GOOD, {"protocol_version": "2"}, 400, "Unknown protocol_version"),
        (WHL, GOOD, {"filetype": "sdist"}, 400, "filetype 'sdist' does not match"),
    ],
)
def test_rejections_change_nothing(app: TestApp, settings: Settings, filename: str, data: bytes,
                                   fields: dict[str, Any], status: int, reason: str) -> None:
    before = snapshot(settings)
    resp = post(app, "dev", filename, data, status=status, **fields)
    assert reason in resp.status and reason in resp.text
    assert "\n" not in resp.status and "\r" not in resp.status
    assert snapshot(settings) == before


def test_grossly_oversized_body_is_refused_before_reading(app: TestApp,
                                                          settings: Settings) -> None:
    before = snapshot(settings)
    req = TestRequest.blank("/pypi/dev/", method="POST", body=b"x",
                            content_type="multipart/form-data; boundary=x",
                            environ={"REMOTE_USER": "alice"})
    req.environ["CONTENT_LENGTH"] = str(1 << 30)  # a body that never comes: not read at all
    resp = app.do_request(req, status=413, expect_errors=True)
    assert "Upload too large" in resp.status
    assert snapshot(settings) == before


def test_missing_file_field(app: TestApp) -> None:
    resp = app.post("/pypi/dev/", params=twine_fields(WHL, GOOD), status=400,
                    extra_environ={"REMOTE_USER": "alice"})
    assert "Missing file in 'content'" in resp.status


@pytest.mark.parametrize(
    ("repo", "user", "status", "reason"),
    [
        ("dev", None, 401, "Authentication required"),
        ("stable", "alice", 403, "User 'alice' may not upload to 'stable'"),
        ("stable", "mallory", 403, "may not upload"),
        ("qa", "alice", 404, "No such repository: 'qa'"),
    ],
)
def test_authorization(app: TestApp, settings: Settings, repo: str, user: str | None,
                       status: int, reason: str) -> None:
    before = snapshot(settings)
    resp = post(app, repo, WHL, GOOD, user=user, status=status)
    assert reason in resp.status
    if status == 401:
        assert resp.headers["WWW-Authenticate"].startswith("Basic")
    assert snapshot(settings) == before


def test_identity_only_from_remote_user(app: TestApp) -> None:
    """An Authorization header without Apache in front is not an identity (fail closed)."""
    resp = app.post("/pypi/dev/", params=twine_fields(WHL, GOOD),
                    upload_files=[("content", WHL, GOOD)], status=401,
                    headers={"Authorization": "Basic YWxpY2U6eA==", "X-Remote-User": "alice"})
    assert "Authentication required" in resp.status


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_other_methods(app: TestApp, method: str) -> None:
    resp = getattr(app, method)("/pypi/dev/", status=405, extra_environ={"REMOTE_USER": "alice"})
    assert resp.headers["Allow"] == "POST"


def test_identical_reupload_is_ok_and_untouched(app: TestApp, settings: Settings) -> None:
    post(app, "dev", WHL, GOOD, status=200)
    path = settings.root / "dev" / "acme" / WHL
    st = path.stat()
    before = snapshot(settings)
    resp = post(app, "dev", WHL, GOOD, status=200)
    assert "already there with the same contents" in resp.text
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    assert snapshot(settings) == before


def test_same_name_other_bytes_is_refused(app: TestApp, settings: Settings) -> None:
    post(app, "dev", WHL, GOOD, status=200)
    before = snapshot(settings)
    other = wheel_bytes("acme", "1.0", payload=b"# changed\n")
    resp = post(app, "dev", WHL, other, status=400)
    assert "File already exists" in resp.status
    assert (settings.root / "dev" / "acme" / WHL).read_bytes() == GOOD
    assert snapshot(settings) == before


def test_same_name_other_bytes_down_the_chain_is_refused(app: TestApp) -> None:
    post(app, "stable", WHL, GOOD, user="carol", status=200)
    resp = post(app, "dev", WHL, wheel_bytes("acme", "1.0", payload=b"#\n"), status=400)
    assert "File already exists" in resp.status and "in stable" in resp.status


def test_removed_filename_is_never_reusable(app: TestApp, settings: Settings) -> None:
    post(app, "dev", WHL, GOOD, status=200)
    (settings.root / "dev" / "acme" / WHL).unlink()
    regenerate(settings)
    resp = post(app, "dev", WHL, GOOD, status=400)
    assert "File already exists" in resp.status and "never be reused" in resp.status


def test_an_upload_over_a_damaged_record_is_refused_without_paths(
        app: TestApp, settings: Settings) -> None:
    post(app, "dev", WHL, GOOD, status=200)
    record = settings.state / "records" / "dev" / "acme.json"
    record.write_text('{"files": null, "tombstones": {}}')
    resp = app.post("/pypi/dev/", params=twine_fields(WHL, GOOD),
                    upload_files=[("content", WHL, GOOD)],
                    extra_environ={"REMOTE_USER": "alice"}, status=500, expect_errors=True)
    assert "records is damaged" in resp.text and str(settings.state) not in resp.text
    assert f"{record}: the record's files is NoneType" in resp.errors  # the sysadmin's log
    assert (settings.root / "dev" / "acme" / WHL).read_bytes() == GOOD


def test_health(app: TestApp, settings: Settings) -> None:
    regenerate(settings)
    body = app.get("/pypi/+health", status=200).json
    assert body["ok"] is True and body["disk_free_bytes"] > 0
    assert body["last_regeneration"].endswith("Z")


def test_unknown_path_is_404(app: TestApp) -> None:
    resp = app.get("/other/", status=404)
    assert resp.status.startswith("404 Not found") and "/other/" in resp.text
    resp = app.post("/pypi/dev/acme/", status=404)
    assert "No such repository" in resp.status and "dev/acme" in resp.text


def test_reason_with_non_latin1_text_still_makes_a_valid_status_line(app: TestApp) -> None:
    data = wheel_bytes("acme", "1.0", metadata="Name: acmé\nVersion: 1.0\n\n")
    resp = post(app, "dev", WHL, data, status=400)
    assert resp.status.startswith("400 Invalid project name in metadata 'acm")
    assert "name in metadata 'acmé'" in resp.text


def test_empty_tree_stays_empty_on_bad_first_upload(app: TestApp, settings: Settings) -> None:
    assert not (settings.root / "dev").exists()
    post(app, "dev", WHL, b"garbage", status=400)
    assert not (settings.root / "dev").exists()



def test_burst_of_new_projects_gets_one_root_refresh_that_lists_them_all(
        settings: Settings) -> None:
    now = [100.0]
    waiting: list[tuple[float, Callable[[], None]]] = []
    wsgi_app = make_app(settings)
    wsgi_app.roots = RootRefresher(settings, interval=2.0, clock=lambda: now[0],
                                   later=lambda wait, run: waiting.append((wait, run)))
    app = TestApp(wsgi_app)
    names = ["aa", "bb", "cc"]
    root = settings.root / "dev" / "index.v1_json"

    def listed() -> list[str]:
        return [p["name"] for p in json.loads(root.read_text())["projects"]]

    post(app, "dev", wheel_name("aa", "1.0"), wheel_bytes("aa", "1.0"), status=200)
    assert listed() == ["aa"]  # the first rebuilds at once
    now[0] += 1.5  # within the interval: folded into one rebuild at its end
    for name in names[1:]:
        post(app, "dev", wheel_name(name, "1.0"), wheel_bytes(name, "1.0"), status=200)
    assert listed() == ["aa"]
    assert [wait for wait, _ in waiting] == [pytest.approx(0.5)]
    now[0] += 0.5
    waiting[0][1]()
    assert listed() == names


def test_a_new_project_is_folded_into_the_root_listing_as_it_is(settings: Settings) -> None:
    """An upload adds its project to the root listing on disk, with no walk of the
    repository (which costs as much as it has projects); a root listing that cannot be
    read is rebuilt from the disk; regen-index rebuilds it from the disk."""
    wsgi_app = make_app(settings)
    wsgi_app.roots = RootRefresher(settings, interval=0.0)
    app = TestApp(wsgi_app)
    root = settings.root / "dev" / "index.v1_json"

    def listed() -> list[str]:
        return [p["name"] for p in json.loads(root.read_text())["projects"]]

    post(app, "dev", wheel_name("aa", "1.0"), wheel_bytes("aa", "1.0"), status=200)
    assert listed() == ["aa"]
    root.write_text("{not json")  # damaged: rebuilt from what is on disk
    post(app, "dev", wheel_name("bb", "1.0"), wheel_bytes("bb", "1.0"), status=200)
    assert listed() == ["aa", "bb"]
    page = json.loads(root.read_text())
    page["projects"].append({"name": "zz"})  # what the listing says is what is kept
    root.write_text(json.dumps(page))
    post(app, "dev", wheel_name("cc", "1.0"), wheel_bytes("cc", "1.0"), status=200)
    post(app, "dev", wheel_name("aa", "2.0"), wheel_bytes("aa", "2.0"), status=200)
    assert listed() == ["aa", "bb", "cc", "zz"]
    assert (settings.root / "dev" / "index.html").read_text().count("<a href=") == 4
    regenerate(settings)
    assert listed() == ["aa", "bb", "cc"]


@pytest.mark.parametrize(("errno_", "status"), [(28, 507), (5, 500)])  # ENOSPC, EIO
def test_disk_failure_is_5xx_and_publishes_nothing(app: TestApp, settings: Settings,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   errno_: int, status: int) -> None:
    post(app, "dev", WHL, GOOD, status=200)
    before = snapshot(settings)

    def failing_fsync(fd: int) -> None:
        raise OSError(errno_, os.strerror(errno_))

    monkeypatch.setattr(os, "fsync", failing_fsync)
    other, data = wheel_name("acme", "2.0"), wheel_bytes("acme", "2.0")
    resp = app.post("/pypi/dev/", params=twine_fields(other, data),
                    upload_files=[("content", other, data)], status=status,
                    extra_environ={"REMOTE_USER": "alice"}, expect_errors=True)
    assert "Storage error" in resp.status and "nothing was published" in resp.text
    monkeypatch.undo()
    assert snapshot(settings) == before
    assert not (settings.root / "dev" / "acme" / other).exists()


def raw_post(app: TestApp, body: bytes, content_type: str) -> Any:
    req = TestRequest.blank("/pypi/dev/", method="POST", body=body,
                            content_type=content_type, environ={"REMOTE_USER": "alice"})
    return app.do_request(req, status="*", expect_errors=True)


def multipart(boundary: bytes, parts: list[tuple[bytes, bytes]]) -> bytes:
    out = b"".join(b"--" + boundary + b"\r\nContent-Disposition: form-data; " + header
                   + b"\r\n\r\n" + value + b"\r\n" for header, value in parts)
    return out + b"--" + boundary + b"--\r\n"


def test_hostile_forms_are_4xx_in_bounded_time(app: TestApp, settings: Settings) -> None:
    """Item 34: what the parser cannot take is refused before it gets there, never a 500."""
    before = snapshot(settings)
    long_boundary = b"b" * 5000
    fields = [(f'name="f{i}"'.encode(), b"x") for i in range(200_000)]
    undecodable = [(b'name=":action"', b"file_upload"), (b'name="\xff\xfe"', b"x"),
                   (b'name="content"; filename="acme-1.0-py3-none-any\xff.whl"', GOOD)]
    cases = [
        (multipart(long_boundary, [(b'name=":action"', b"file_upload")]),
         "multipart/form-data; boundary=" + "b" * 5000, "Invalid multipart boundary"),
        (multipart(b"xyz", fields), "multipart/form-data; boundary=xyz",
         "Too many form fields"),
        (multipart(b"xyz", undecodable), "multipart/form-data; boundary=xyz", ""),
        (b"&".join(b"f%d=x" % i for i in range(200_000)), "application/x-www-form-urlencoded",
         "Too many form fields"),
        (b"a=b", "text/plain", "multipart/form-data"),
        (b"--xyz\r\nContent-Disposition: form-data\r\n\r\n", "multipart/form-data",
         "Invalid multipart boundary"),
    ]
    for body, ctype, reason in cases:
        started = time.process_time()
        resp = raw_post(app, body, ctype)
        assert 400 <= resp.status_int < 500, (ctype[:60], resp.status)
        assert reason in resp.status
        assert time.process_time() - started < 3
    assert snapshot(settings) == before
