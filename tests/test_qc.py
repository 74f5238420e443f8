"""The QC workflow: promote, yank, remove, pin, verify, audit — and their bad inputs."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import write_config
from distfactory import wheel_bytes, wheel_name
from fake_upstream import FakeUpstream, running_upstream
from helpers import cli, post
from pypi_fallback.app import make_app
from pypi_fallback.config import Settings, load_settings
from pypi_fallback.errors import BadRequest, FileExists, Forbidden, NotFound
from pypi_fallback.qc import parse_pylock, parse_requirements, pin, promote, remove, verify
from pypi_fallback.regen import regenerate
from pypi_fallback.storage import Tree, load_claims
from webtest import TestApp


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with running_upstream() as up:
        for name, version in [("six", "1.16.0"), ("attrs", "23.1.0"), ("attrs", "23.2.0")]:
            up.add(name, wheel_name(name, version), wheel_bytes(name, version))
        yield up


@pytest.fixture
def settings(tmp_path: Path, upstream: FakeUpstream) -> Settings:
    return load_settings(write_config(tmp_path, upstream=upstream.simple_url))


@pytest.fixture
def app(settings: Settings) -> TestApp:
    return TestApp(make_app(settings))


def files(settings: Settings, repo: str, project: str) -> dict[str, Any]:
    path = settings.root / repo / project / "index.v1_json"
    if not path.exists():
        return {}
    return {f["filename"]: f for f in json.loads(path.read_text())["files"]}


def test_promote_copies_release_and_is_idempotent(app: TestApp, settings: Settings) -> None:
    post(app, "dev", wheel_name("acme", "1.0"), wheel_bytes("acme", "1.0"), status=200)
    result = cli("promote", "Acme==1.0", settings=settings)
    assert result.returncode == 0, result.stderr
    assert "promoted dev -> stable: acme-1.0-py3-none-any.whl" in result.stdout
    assert list(files(settings, "stable", "acme")) == ["acme-1.0-py3-none-any.whl"]
    stable_file = settings.root / "stable" / "acme" / "acme-1.0-py3-none-any.whl"
    assert stable_file.read_bytes() == wheel_bytes("acme", "1.0")
    assert (stable_file.parent / (stable_file.name + ".metadata")).exists()
    again = cli("promote", "acme==1.0", settings=settings)
    assert again.returncode == 0 and "already in stable; nothing to do" in again.stdout
    entries = [json.loads(x) for x in (settings.state / "audit.jsonl").read_text().splitlines()]
    assert [e["action"] for e in entries] == ["upload", "promote"]
    assert entries[-1]["user"] == "qc-carol"


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [("acme==2.0", NotFound, "No files of acme==2.0 in dev"),
     ("nothing==1.0", NotFound, "No files of nothing==1.0"),
     ("acme", BadRequest, "expected PROJECT==VERSION"),
     ("acme==x y", BadRequest, "expected PROJECT==VERSION"),
     ("acme[extra]==1.0", BadRequest, "expected PROJECT==VERSION"),
     ("acme==1.*", BadRequest, "expected PROJECT==VERSION"),
     ("acme x==1.0", BadRequest, "expected PROJECT==VERSION")],
)
def test_promote_bad_input(app: TestApp, settings: Settings, spec: str,
                           error: type[Exception], message: str) -> None:
    post(app, "dev", wheel_name("acme", "1.0"), wheel_bytes("acme", "1.0"), status=200)
    with pytest.raises(error, match=message):
        promote(settings, spec, "dev", "stable", "qc")


def test_promote_never_overwrites_a_different_file(app: TestApp, settings: Settings) -> None:
    post(app, "stable", wheel_name("acme", "1.0"), wheel_bytes("acme", "1.0"), user="carol",
         status=200)
    # the same name with other bytes sneaks into dev by scp
    folder = settings.root / "dev" / "acme"
    folder.mkdir(parents=True)
    (folder / wheel_name("acme", "1.0")).write_bytes(wheel_bytes("acme", "1.0", payload=b"#x\n"))
    from pypi_fallback.regen import regenerate

    regenerate(settings, ["dev"])
    with pytest.raises(FileExists, match="with other contents"):
        promote(settings, "acme==1.0", "dev", "stable", "qc")
    assert (settings.root / "stable" / "acme" / wheel_name("acme", "1.0")).read_bytes() == \
        wheel_bytes("acme", "1.0")


def test_promote_refuses_a_tampered_source(app: TestApp, settings: Settings) -> None:
    post(app, "dev", wheel_name("acme", "1.0"), wheel_bytes("acme", "1.0"), status=200)
    path = settings.root / "dev" / "acme" / wheel_name("acme", "1.0")
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    result = cli("promote", "acme==1.0", settings=settings)
    assert result.returncode == 2 and "differs from its recorded sha256" in result.stderr
    assert not (settings.root / "stable" / "acme").exists()


def test_yank_and_unyank_in_both_renderings(app: TestApp, settings: Settings) -> None:
    post(app, "dev", wheel_name("acme", "1.0"), wheel_bytes("acme", "1.0"), status=200)
    result = cli("yank", "acme==1.0", "--reason", "broken <build>", settings=settings)
    assert result.returncode == 0, result.stderr
    assert files(settings, "dev", "acme")[wheel_name("acme", "1.0")]["yanked"] == "broken <build>"
    html = (settings.root / "dev" / "acme" / "index.html").read_text()
    assert 'data-yanked="broken &lt;build&gt;"' in html
    assert cli("unyank", "acme==1.0", settings=settings).returncode == 0
    assert files(settings, "dev", "acme")[wheel_name("acme", "1.0")]["yanked"] is False
    assert "data-yanked" not in (settings.root / "dev" / "acme" / "index.html").read_text()
    missing = cli("yank", "acme==9.9", "--reason", "x", settings=settings)
    assert missing.returncode == 2 and "No files of acme==9.9" in missing.stderr


def test_remove_leaves_tombstone_and_stable_needs_force(app: TestApp,
                                                        settings: Settings) -> None:
    post(app, "dev", wheel_name("acme", "1.0"), wheel_bytes("acme", "1.0"), status=200)
    post(app, "dev", wheel_name("acme", "1.1"), wheel_bytes("acme", "1.1"), status=200)
    promote(settings, "acme==1.0", "dev", "stable", "qc")
    with pytest.raises(Forbidden, match="needs --force"):
        remove(settings, "acme==1.0", "stable", "qc")
    assert remove(settings, "acme==1.0", "stable", "qc", force=True) == [
        "stable/acme/acme-1.0-py3-none-any.whl"]
    assert not (settings.root / "stable" / "acme" / "index.v1_json").exists()
    result = cli("remove", "acme==1.1", "--repo", "dev", settings=settings)
    assert result.returncode == 0, result.stderr
    assert list(files(settings, "dev", "acme")) == [wheel_name("acme", "1.0")]
    resp = post(app, "dev", wheel_name("acme", "1.1"), wheel_bytes("acme", "1.1"), status=400)
    assert "never be reused" in resp.status


def test_verify_finds_tampered_and_missing_files(app: TestApp, settings: Settings) -> None:
    for v in ("1.0", "1.1"):
        post(app, "dev", wheel_name("acme", v), wheel_bytes("acme", v), status=200)
    ok = cli("verify", settings=settings)
    assert ok.returncode == 0 and "2 files checked, 0 problems" in ok.stderr
    folder = settings.root / "dev" / "acme"
    listing_before = (folder / "index.v1_json").read_bytes()
    (folder / wheel_name("acme", "1.0")).write_bytes(b"tampered")
    (folder / wheel_name("acme", "1.1")).unlink()
    bad = cli("verify", "--repo", "dev", settings=settings)
    assert bad.returncode == 1
    assert f"sha256 mismatch: dev/acme/{wheel_name('acme', '1.0')}" in bad.stdout
    assert f"missing: dev/acme/{wheel_name('acme', '1.1')}" in bad.stdout
    assert (folder / "index.v1_json").read_bytes() == listing_before  # nothing hidden
    assert verify(settings)[1]


def requirements(tmp_path: Path, upstream: FakeUpstream, lines: list[str]) -> Path:
    path = tmp_path / "requirements.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def sha(upstream: FakeUpstream, project: str, version: str) -> str:
    return hashlib.sha256(upstream.files[project][wheel_name(project, version)]).hexdigest()


def test_pin_copies_exact_files_and_survives_the_upstream(settings: Settings, tmp_path: Path,
                                                          upstream: FakeUpstream) -> None:
    req = requirements(tmp_path, upstream, [
        "# production",
        f"six==1.16.0 --hash=sha256:{sha(upstream, 'six', '1.16.0')}",
        "attrs==23.1.0 \\",
        f"    --hash=sha256:{sha(upstream, 'attrs', '23.1.0')}",
    ])
    result = cli("pin", "-r", str(req), "--to", "stable", settings=settings)
    assert result.returncode == 0, result.stderr
    assert "pin: 2 requirements, 2 files copied, 0 already there" in result.stdout
    stable = settings.root / "stable"
    assert (stable / "six" / wheel_name("six", "1.16.0")).exists()
    assert files(settings, "stable", "attrs")[wheel_name("attrs", "23.1.0")]["url"] == \
        wheel_name("attrs", "23.1.0")
    again = cli("pin", "-r", str(req), settings=settings)
    assert "0 files copied, 2 already there" in again.stdout
    # the upstream deletes everything: the pinned copies stay, unclaimed
    upstream.files.clear()
    upstream.stop()
    assert (stable / "six" / wheel_name("six", "1.16.0")).read_bytes()
    # a full regeneration claims every local-only project; a pinned public one stays open
    regenerate(settings)
    assert (settings.state / "claims.map").is_file()
    assert "six" not in load_claims(Tree.of(settings))


@pytest.mark.parametrize(
    ("line", "message"),
    [("six", "is not pinned"),
     ("six>=1.0 --hash=sha256:" + "0" * 64, "is not pinned"),
     ("six==1.16.0", "has no --hash=sha256"),
     ("six==1.16.0 --hash=md5:abc", "only --hash=sha256"),
     ("-e ./local", "options are not supported"),
     ("six[extra]==1.0 --hash=sha256:" + "0" * 64, "is not pinned")],
)
def test_pin_rejects_unpinned_or_unhashed_lines(tmp_path: Path, upstream: FakeUpstream,
                                                line: str, message: str) -> None:
    req = requirements(tmp_path, upstream, ["# ok", line])
    with pytest.raises(BadRequest, match=f"requirements.txt:2: .*{message}"):
        parse_requirements(req)


def test_pin_hash_mismatch_and_unknown(settings: Settings, tmp_path: Path,
                                       upstream: FakeUpstream) -> None:
    req = requirements(tmp_path, upstream, ["six==1.16.0 --hash=sha256:" + "0" * 64])
    with pytest.raises(NotFound, match="no file of six==1.16.0 with sha256 0000"):
        pin(settings, parse_requirements(req), "stable", "qc")
    wrong_version = requirements(tmp_path, upstream, [
        f"attrs==23.1.0 --hash=sha256:{sha(upstream, 'attrs', '23.2.0')}"])
    with pytest.raises(BadRequest, match="is attrs-23.2.0-py3-none-any.whl, not version 23.1.0"):
        pin(settings, parse_requirements(wrong_version), "stable", "qc")
    assert not (settings.root / "stable").exists()


def test_pylock(settings: Settings, tmp_path: Path, upstream: FakeUpstream) -> None:
    lock = tmp_path / "pylock.toml"
    wheel, digest = wheel_name("six", "1.16.0"), sha(upstream, "six", "1.16.0")
    url = f"{upstream.base}/files/{wheel}"
    lock.write_text(f"""lock-version = "1.0"
created-by = "test"
[[packages]]
name = "six"
version = "1.16.0"
wheels = [
  {{ name = "{wheel}", url = "{url}", hashes = {{ sha256 = "{digest}" }} }},
]
""")
    result = cli("pin", "-r", str(lock), settings=settings)
    assert result.returncode == 0, result.stderr
    assert (settings.root / "stable" / "six" / wheel_name("six", "1.16.0")).exists()


def test_audit_filters(app: TestApp, settings: Settings) -> None:
    post(app, "dev", wheel_name("acme", "1.0"), wheel_bytes("acme", "1.0"), status=200)
    post(app, "dev", wheel_name("other", "1.0"), wheel_bytes("other", "1.0"), user="bob",
         status=200)
    out = cli("audit", "--project", "Acme", "--json", settings=settings)
    (entry,) = [json.loads(x) for x in out.stdout.splitlines()]
    assert entry["user"] == "alice" and entry["filename"] == wheel_name("acme", "1.0")
    assert cli("audit", "--user", "bob", settings=settings).stdout.count("\n") == 1
    assert cli("audit", "--since", "2999-01-01", settings=settings).stdout == ""
    table = cli("audit", settings=settings).stdout
    assert "alice" in table and "upload" in table


def test_pylock_is_validated_by_packaging(tmp_path: Path) -> None:
    lock = tmp_path / "pylock.toml"
    lock.write_text('lock-version = "1.0"\ncreated-by = "t"\n[[packages]]\nname = "six"\n'
                    'version = "1.16.0"\nwheels = [{ name = "six-1.16.0-py3-none-any.whl", '
                    'hashes = { sha256 = "' + "0" * 64 + '" } }]\n')  # no url nor path
    with pytest.raises(BadRequest, match="not a valid pylock.toml"):
        parse_pylock(lock)
