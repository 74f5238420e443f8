"""Item 28: a publish makes the distribution visible last; any failure takes back what it made.

Two kinds of bad luck: a real filesystem that fills up (a small tmpfs mounted by the test),
and an ``OSError`` injected at each call of each file-system function a publish makes.
After a failure, nothing of the file is on disk (so nothing is visible over HTTP, where
Apache serves the disk as it is), its record does not list it, and a later regen-index
publishes nothing.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import write_config
from distfactory import wheel_bytes, wheel_name
from helpers import small_tmpfs
from pypi_fallback.app import make_app
from pypi_fallback.config import Settings, load_settings
from pypi_fallback.qc import promote
from pypi_fallback.regen import regenerate
from uploads import twine_fields
from webtest import TestApp

FIRST, SECOND = wheel_name("acme", "1.0"), wheel_name("acme", "2.0")


def upload(app: TestApp, filename: str, data: bytes) -> Any:
    return app.post("/pypi/dev/", params=twine_fields(filename, data),
                    upload_files=[("content", filename, data)],
                    extra_environ={"REMOTE_USER": "alice"}, expect_errors=True)


# These tests are about the disk, not names: "acme" is private, so no upstream is asked.
LOCAL_ONLY = '[policy]\nprivate = ["acme"]\n'


def audit_lines(settings: Settings, filename: str) -> list[str]:
    try:
        lines = (settings.state / "audit.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line)["action"] for line in lines
            if json.loads(line).get("filename") == filename]


def assert_not_published(settings: Settings, repo: str, filename: str) -> None:
    """Nothing of ``filename`` is served, recorded, or left for regen-index to publish."""
    folder = settings.root / repo / "acme"
    leftovers = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    assert filename not in leftovers and f"{filename}.metadata" not in leftovers
    assert not [n for n in leftovers if n.startswith(".tmp-")]
    if (folder / "index.v1_json").exists():
        assert filename not in (folder / "index.v1_json").read_text()
    record = settings.state / "records" / repo / "acme.json"
    if record.exists():
        files = json.loads(record.read_text())["files"]
        assert filename not in files or files[filename].get("pending")
    report = regenerate(settings)
    assert report.published == [], report
    assert not (folder / filename).exists()
    listed = folder / "index.v1_json"
    assert not listed.exists() or filename not in listed.read_text()
    tombstones = json.loads(record.read_text())["tombstones"] if record.exists() else {}
    assert filename not in tombstones  # never published: the name stays usable


def assert_published(settings: Settings, repo: str, filename: str, data: bytes) -> None:
    folder = settings.root / repo / "acme"
    assert (folder / filename).read_bytes() == data
    assert (folder / f"{filename}.metadata").exists()
    assert filename in (folder / "index.v1_json").read_text()
    assert "upload" in audit_lines(settings, filename) or "promote" in audit_lines(
        settings, filename)


# -- injected OSErrors ---------------------------------------------------------------------

FUNCTIONS = ("fsync", "replace", "link", "unlink", "open", "write", "rename")


def failing_at(name: str, n: int, err: int) -> tuple[Callable[..., Any], list[int]]:
    """``os.<name>`` that raises OSError(err) on its n-th call (counting in ``calls``)."""
    real = getattr(os, name)
    calls = [0]

    def fake(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == n:
            raise OSError(err, os.strerror(err))
        return real(*args, **kwargs)

    return fake, calls


@pytest.mark.parametrize("function", FUNCTIONS)
def test_upload_fault_at_every_call_publishes_nothing(tmp_path: Path, function: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = wheel_bytes("acme", "1.0"), wheel_bytes("acme", "2.0")
    for n in range(1, 60):
        home = tmp_path / f"{function}-{n}"
        home.mkdir()
        settings = load_settings(write_config(home, LOCAL_ONLY))
        app = TestApp(make_app(settings))
        assert upload(app, FIRST, first).status_int == 200
        fake, calls = failing_at(function, n, errno.ENOSPC)
        with monkeypatch.context() as patch:
            patch.setattr(os, function, fake)
            resp = upload(app, SECOND, second)
        if calls[0] < n:  # the n-th call never came: every call was tried
            assert resp.status_int == 200
            assert_published(settings, "dev", SECOND, second)
            break
        if resp.status_int == 200:  # the fault hit after the publish was complete
            assert_published(settings, "dev", SECOND, second)
        else:
            assert resp.status_int in (500, 507), resp
            assert "nothing was published" in resp.text
            assert_not_published(settings, "dev", SECOND)
            assert upload(app, SECOND, second).status_int == 200  # a retry works
            assert_published(settings, "dev", SECOND, second)
        assert_published(settings, "dev", FIRST, first)
    else:
        pytest.fail(f"os.{function} was called more than 60 times by one upload")


@pytest.mark.parametrize("function", ("fsync", "replace", "link", "open"))
def test_promote_fault_at_every_call_publishes_nothing(tmp_path: Path, function: str,
                                                       monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    data = wheel_bytes("acme", "1.0")
    for n in range(1, 60):
        home = tmp_path / f"{function}-{n}"
        home.mkdir()
        settings = load_settings(write_config(home, LOCAL_ONLY))
        assert upload(TestApp(make_app(settings)), FIRST, data).status_int == 200
        fake, calls = failing_at(function, n, errno.EIO)
        failed = False
        with monkeypatch.context() as patch:
            patch.setattr(os, function, fake)
            try:
                promote(settings, "acme==1.0", "dev", "stable", "carol")
            except OSError:
                failed = True
        if not failed:
            assert_published(settings, "stable", FIRST, data)
            if calls[0] < n:
                break
            continue
        assert_not_published(settings, "stable", FIRST)
        promote(settings, "acme==1.0", "dev", "stable", "carol")
        assert_published(settings, "stable", FIRST, data)
    else:
        pytest.fail(f"os.{function} was called more than 60 times by one promote")


# -- a real filesystem that fills up --------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs mounted for this test."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with small_tmpfs(mnt, "2m"):
        yield mnt


def fill(mnt: Path, leave: int) -> None:
    """Leave about ``leave`` bytes free on the filesystem of ``mnt``."""
    filler = mnt / "filler"
    filler.unlink(missing_ok=True)
    st = os.statvfs(mnt)
    free = st.f_bavail * st.f_frsize
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))


def test_full_disk_at_every_margin_publishes_all_or_nothing(small_fs: Path) -> None:
    settings = load_settings(write_config(small_fs, LOCAL_ONLY))
    app = TestApp(make_app(settings))
    assert upload(app, FIRST, wheel_bytes("acme", "1.0")).status_int == 200
    data = wheel_bytes("acme", "2.0", payload=os.urandom(300 * 1024))
    outcomes = set()
    for pages in range(0, 40):
        fill(small_fs, len(data) + pages * 4096)
        resp = upload(app, SECOND, data)
        outcomes.add(resp.status_int)
        if resp.status_int == 200:
            assert_published(settings, "dev", SECOND, data)
            break
        assert resp.status_int == 507, resp
        assert "nothing was published" in resp.text
        (small_fs / "filler").unlink()
        assert_not_published(settings, "dev", SECOND)
    assert outcomes >= {507, 200}, outcomes


def test_a_publish_killed_half_way_is_taken_back(tmp_path: Path) -> None:
    """The state a publish killed after its record and its link leaves behind: the next
    upload of the name takes it back (and still asks whether the name is new), and so does
    regen-index, without a tombstone."""
    settings = load_settings(write_config(tmp_path, LOCAL_ONLY))
    app = TestApp(make_app(settings))
    data = wheel_bytes("acme", "1.0")
    assert upload(app, FIRST, data).status_int == 200
    folder = settings.root / "dev" / "acme"
    record_path = settings.state / "records" / "dev" / "acme.json"
    record = json.loads(record_path.read_text())
    record["files"][FIRST]["pending"] = True
    record_path.write_text(json.dumps(record))
    (settings.state / "claims.new.map").unlink()  # killed before the claim was added
    from pypi_fallback.upload import is_new_name

    assert is_new_name(settings, "acme")  # never published as far as anyone knows
    report = regenerate(settings)
    assert report.removed == [f"dev/acme/{FIRST}"] and report.published == []
    assert not (folder / FIRST).exists() and not (folder / f"{FIRST}.metadata").exists()
    assert FIRST not in json.loads(record_path.read_text())["tombstones"]
    assert upload(app, FIRST, data).status_int == 200
    assert_published(settings, "dev", FIRST, data)
