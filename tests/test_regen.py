"""regen-index: files copied into a repo folder are validated and published."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from multiprocessing import get_context
from pathlib import Path

import pytest
from distfactory import wheel_name, write_sdist, write_wheel
from pypi_fallback.config import Settings, load_settings
from pypi_fallback.regen import regenerate
from pypi_fallback.storage import utc_timestamp

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "regen-index"


def listing(settings: Settings, repo: str, project: str = "") -> dict:  # type: ignore[type-arg]
    folder = settings.root / repo / project if project else settings.root / repo
    return json.loads((folder / "index.v1_json").read_text())


def filenames(settings: Settings, repo: str, project: str) -> list[str]:
    return [f["filename"] for f in listing(settings, repo, project)["files"]]


def test_dropped_files_appear_in_both_listings(settings: Settings) -> None:
    dev, stable = settings.root / "dev", settings.root / "stable"
    write_wheel(dev / "acme", "acme", "2.0", requires_python=">=3.9")
    write_sdist(stable / "acme", "acme", "1.0")
    write_wheel(stable / "other", "other", "1.0")

    report = regenerate(settings)

    assert report.ok and len(report.published) == 3
    page = listing(settings, "dev", "acme")
    assert [f["filename"] for f in page["files"]] == ["acme-2.0-py3-none-any.whl",
                                                      "acme-1.0.tar.gz"]
    assert page["files"][1]["url"] == "../../stable/acme/acme-1.0.tar.gz"
    assert page["files"][0]["requires-python"] == ">=3.9"
    assert page["versions"] == ["1.0", "2.0"]
    assert filenames(settings, "stable", "acme") == ["acme-1.0.tar.gz"]
    html = (dev / "acme" / "index.html").read_text()
    assert 'href="../../stable/acme/acme-1.0.tar.gz#sha256=' in html
    metadata = dev / "acme" / "acme-2.0-py3-none-any.whl.metadata"
    assert metadata.read_bytes().startswith(b"Metadata-Version")
    assert [p["name"] for p in listing(settings, "dev")["projects"]] == ["acme", "other"]
    assert [p["name"] for p in listing(settings, "stable")["projects"]] == ["acme", "other"]
    assert (dev / "acme" / "index.var").read_text().startswith("URI: index.html")


def test_invalid_files_go_to_quarantine_with_reason(settings: Settings) -> None:
    folder = settings.root / "stable" / "acme"
    good = write_wheel(folder, "acme", "1.0")
    (folder / "acme-2.0-py3-none-any.whl").write_bytes(b"not a zip")
    write_wheel(folder, "other", "1.0")  # wrong folder
    (folder / "notes.txt").write_text("hi")

    report = regenerate(settings)

    assert not report.ok
    reasons = dict(report.quarantined)
    assert "Invalid distribution file" in reasons["stable/acme/acme-2.0-py3-none-any.whl"]
    assert "belongs to project 'other'" in reasons["stable/acme/" + wheel_name("other", "1.0")]
    assert "Invalid file extension" in reasons["stable/acme/notes.txt"]
    assert filenames(settings, "stable", "acme") == [good.name]
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith("index")) == [
        good.name, good.name + ".metadata"]
    quarantined = sorted((settings.state / "quarantine" / "stable").iterdir())
    assert len(quarantined) == 6  # three files, three reasons
    reason_files = [p for p in quarantined if p.name.endswith(".reason")]
    assert any("Invalid distribution file" in p.read_text() for p in reason_files)


def test_second_run_rewrites_nothing_and_keeps_upload_time(settings: Settings) -> None:
    write_wheel(settings.root / "dev" / "acme", "acme", "1.0")
    regenerate(settings)
    index = settings.root / "dev" / "acme" / "index.v1_json"
    before = index.stat()
    upload_time = listing(settings, "dev", "acme")["files"][0]["upload-time"]

    report = regenerate(settings)

    assert report.listings == 0 and report.published == []
    after = index.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert listing(settings, "dev", "acme")["files"][0]["upload-time"] == upload_time


def test_publish_into_stable_refreshes_dev_page(settings: Settings) -> None:
    write_wheel(settings.root / "dev" / "acme", "acme", "2.0")
    regenerate(settings)
    write_wheel(settings.root / "stable" / "acme", "acme", "1.0")

    regenerate(settings, ["stable"], ["Acme"])

    assert filenames(settings, "dev", "acme") == ["acme-2.0-py3-none-any.whl",
                                                  "acme-1.0-py3-none-any.whl"]


def test_deleted_file_leaves_tombstone_and_name_is_never_reused(settings: Settings) -> None:
    folder = settings.root / "dev" / "acme"
    path = write_wheel(folder, "acme", "1.0")
    write_wheel(folder, "acme", "1.1")
    regenerate(settings)
    path.unlink()
    regenerate(settings)
    assert filenames(settings, "dev", "acme") == ["acme-1.1-py3-none-any.whl"]
    assert not (folder / (path.name + ".metadata")).exists()

    write_wheel(folder, "acme", "1.0", payload=b"# other bytes\n")
    report = regenerate(settings)

    assert "never reused" in dict(report.quarantined)[f"dev/acme/{path.name}"]
    assert filenames(settings, "dev", "acme") == ["acme-1.1-py3-none-any.whl"]


def test_a_damaged_record_stops_its_project_only_and_is_named(settings: Settings) -> None:
    folder = settings.root / "dev" / "acme"
    removed = write_wheel(folder, "acme", "1.0")
    write_wheel(folder, "acme", "1.1")
    write_wheel(settings.root / "dev" / "other", "other", "1.0")
    regenerate(settings)
    removed.unlink()
    regenerate(settings)
    record = settings.state / "records" / "dev" / "acme.json"
    assert record.exists()
    data = json.loads(record.read_bytes())
    data["tombstones"] = None  # damaged: must not be read as "nothing was ever removed"
    record.write_text(json.dumps(data))
    write_wheel(folder, "acme", "1.0", payload=b"# other bytes\n")
    write_wheel(settings.root / "dev" / "other", "other", "1.1")

    result = run_cli("--config", str(settings.source))

    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert str(record) in result.stderr and "tombstones" in result.stderr
    # the reused name is not published
    assert filenames(settings, "dev", "acme") == ["acme-1.1-py3-none-any.whl"]
    assert sorted(filenames(settings, "dev", "other")) == ["other-1.0-py3-none-any.whl",
                                                            "other-1.1-py3-none-any.whl"]
    record.write_text("{not json")
    result = run_cli("--config", str(settings.source))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{record}: not a record" in result.stderr


def test_project_emptied_loses_its_listing(settings: Settings) -> None:
    path = write_wheel(settings.root / "dev" / "acme", "acme", "1.0")
    regenerate(settings)
    path.unlink()
    regenerate(settings)
    assert not (settings.root / "dev" / "acme" / "index.v1_json").exists()
    assert listing(settings, "dev")["projects"] == []


def test_stale_temporary_files_are_cleaned(settings: Settings) -> None:
    folder = settings.root / "dev" / "acme"
    write_wheel(folder, "acme", "1.0")
    leftover = folder / ".tmp-999999999-dead-acme-1.1-py3-none-any.whl"
    leftover.write_bytes(b"half an upload")
    report = regenerate(settings)
    assert not leftover.exists() and str(leftover) in report.removed
    assert filenames(settings, "dev", "acme") == ["acme-1.0-py3-none-any.whl"]


def test_unnormalized_folder_is_quarantined_with_hint(settings: Settings) -> None:
    write_wheel(settings.root / "stable" / "Acme_Foo", "acme-foo", "1.0")
    report = regenerate(settings)
    (reason,) = dict(report.quarantined).values()
    assert "use 'acme-foo'" in reason


def _run_regen(config: str) -> int:
    return 0 if regenerate(load_settings(config)).ok else 1


def test_concurrent_runs_do_not_corrupt(settings: Settings) -> None:
    for i in range(60):
        write_wheel(settings.root / "dev" / f"p{i}", f"p{i}", "1.0")
        write_sdist(settings.root / "stable" / f"p{i}", f"p{i}", "0.9")
    with get_context("fork").Pool(2) as pool:
        results = pool.map(_run_regen, [str(settings.source)] * 4)
    assert results == [0, 0, 0, 0]
    for i in range(60):
        assert filenames(settings, "dev", f"p{i}") == [f"p{i}-1.0-py3-none-any.whl",
                                                       f"p{i}-0.9.tar.gz"]
    leftovers = [p for p in settings.root.rglob(".tmp-*")]
    assert leftovers == []


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_cli_exit_codes(settings: Settings) -> None:
    write_wheel(settings.root / "dev" / "acme", "acme", "1.0")
    ok = run_cli("--config", str(settings.source))
    assert ok.returncode == 0, ok.stderr
    assert "published dev/acme/acme-1.0-py3-none-any.whl" in ok.stdout

    (settings.root / "dev" / "acme" / "acme-2.0.tar.gz").write_bytes(b"junk")
    partly = run_cli(env={"PYPI_FALLBACK_CONFIG": str(settings.source)})
    assert partly.returncode == 1
    assert "quarantined dev/acme/acme-2.0.tar.gz: Invalid distribution file" in partly.stderr

    usage = run_cli("--config", str(settings.source), "--repo", "qa")
    assert usage.returncode == 2
    assert usage.stderr.strip().startswith("regen-index: --repo 'qa': no such repository")
    assert "Traceback" not in usage.stderr

    bad = run_cli("--config", "/nonexistent.toml")
    assert bad.returncode == 2 and "config file not found" in bad.stderr


@pytest.mark.parametrize(
    ("repo", "spec", "expected"),
    [
        ("dev", "acme", "acme-2.0-py3-none-any.whl"),
        ("dev", "acme==1.0", "acme-1.0-py3-none-any.whl"),  # stable's file, linked from dev
        ("stable", "acme", "acme-1.0-py3-none-any.whl"),
    ],
)
def test_pip_downloads_from_regenerated_tree(settings: Settings, tmp_path: Path, repo: str,
                                             spec: str, expected: str) -> None:
    write_wheel(settings.root / "stable" / "acme", "acme", "1.0")
    write_wheel(settings.root / "dev" / "acme", "acme", "2.0")
    regenerate(settings)
    out = tmp_path / "downloads"
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": "",
           "PIP_NO_INPUT": "1"}
    env.pop("PIP_INDEX_URL", None)
    env.pop("PIP_EXTRA_INDEX_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "-d", str(out),
         "--index-url", (settings.root / repo).as_uri() + "/", spec],
        capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [p.name for p in out.iterdir()] == [expected]


@pytest.mark.parametrize(("seconds", "text"), [
    (0.0, "1970-01-01T00:00:00.000000Z"),
    (59.9999996, "1970-01-01T00:01:00.000000Z"),  # rounds up into the next second
    (1_700_000_000.25, "2023-11-14T22:13:20.250000Z"),
])
def test_utc_timestamp_never_comes_out_early(seconds: float, text: str) -> None:
    assert utc_timestamp(seconds) == text


def test_listings_past_the_file_systems_link_limit(settings: Settings,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Every listing's ``index.var`` is a link to one shared type map; ext4 allows 65,000
    links to a file. Past that (EMLINK, injected here: the limit is the file system's),
    the shared copy is made anew and the listings go on; those linked before stay intact
    (a rerun rewrites nothing) and Apache still negotiates each."""
    write_wheel(settings.root / "dev" / "acme", "acme", "1.0")
    regenerate(settings)
    shared = settings.root / ".index.var"
    full = shared.stat().st_ino
    real_link = os.link

    def link(src: object, dst: object, *args: object, **kw: object) -> None:
        if os.stat(src).st_ino == full:  # type: ignore[arg-type]
            raise OSError(errno.EMLINK, os.strerror(errno.EMLINK))
        real_link(src, dst, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "link", link)
    write_wheel(settings.root / "dev" / "beta", "beta", "1.0")
    report = regenerate(settings)
    assert report.errors == [] and "beta" in {p["name"] for p in listing(settings, "dev")[
        "projects"]}
    old, new = (settings.root / "dev" / name / "index.var" for name in ("acme", "beta"))
    assert old.stat().st_ino == full != new.stat().st_ino == shared.stat().st_ino
    assert old.read_bytes() == new.read_bytes() == shared.read_bytes() != b""
    assert filenames(settings, "dev", "beta") == ["beta-1.0-py3-none-any.whl"]
    acme = settings.root / "dev" / "acme" / "index.v1_json"
    before = acme.stat()
    assert regenerate(settings).listings == 0
    assert (acme.stat().st_ino, acme.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
