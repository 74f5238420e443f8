"""Item 30: regen-index trusts only what it wrote, and one bad entry does not stop a run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from distfactory import write_sdist, write_wheel
from pypi_fallback.config import Settings
from pypi_fallback.regen import regenerate

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "regen-index"


def in_tree(settings: Settings) -> set[str]:
    return {str(p.relative_to(settings.root)) for p in settings.root.rglob("*")}


def test_one_bad_entry_is_reported_and_the_rest_goes_on(settings: Settings,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    stable = settings.root / "stable"
    write_wheel(stable / "good-one", "good-one", "1.0")
    write_wheel(stable / "locked", "locked", "1.0")
    write_wheel(stable / "zz-last", "zz-last", "1.0")
    (stable / "zz-last" / ("x" * 251 + ".whl")).write_bytes(b"a name of 255 bytes")
    odd = os.fsencode(stable) + b"/odd\xff\xfename"
    os.mkdir(odd)
    with open(odd + b"/file.whl", "wb") as f:
        f.write(b"not a wheel")
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:  # a folder the run may not read
        if str(path).endswith("/locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    report = regenerate(settings)
    monkeypatch.undo()

    assert not report.ok
    assert any("locked" in e and "Permission denied" in e for e in report.errors), report
    assert sorted(report.published) == ["stable/good-one/good_one-1.0-py3-none-any.whl",
                                        "stable/zz-last/zz_last-1.0-py3-none-any.whl"]
    assert (stable / "good-one" / "index.v1_json").exists()
    assert (stable / "zz-last" / "index.v1_json").exists()
    assert not (stable / "zz-last" / ("x" * 251 + ".whl")).exists()  # quarantined
    assert not os.path.exists(odd + b"/file.whl")
    assert len(report.quarantined) == 2


def test_cli_exits_1_naming_what_it_skipped(settings: Settings) -> None:
    stable = settings.root / "stable"
    write_wheel(stable / "good-one", "good-one", "1.0")
    (stable / "good-one" / ("y" * 251 + ".whl")).write_bytes(b"x")
    result = subprocess.run([sys.executable, str(SCRIPT), "--config", str(settings.source)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "published stable/good-one/good_one-1.0-py3-none-any.whl" in result.stdout


def test_symlinks_are_quarantined_never_followed(settings: Settings, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "passwd").write_text("root:x:0:0\n")
    write_sdist(secret, "acme", "9.0")  # a valid file behind a link is not published either
    stable, dev = settings.root / "stable", settings.root / "dev"
    write_wheel(stable / "acme", "acme", "1.0")
    regenerate(settings)
    os.symlink(secret, stable / "etcproj")
    os.symlink(secret, stable / "acme-linked")
    os.symlink(secret / "acme-9.0.tar.gz", stable / "acme" / "acme-9.0.tar.gz")
    os.symlink(secret / "passwd", stable / "acme" / "index.html.tmp")
    (stable / "acme" / "index.html").unlink()
    os.symlink(secret / "passwd", stable / "acme" / "index.html")
    dev.mkdir(exist_ok=True)
    os.symlink(secret / "passwd", dev / "loose.whl")

    report = regenerate(settings)

    links = [p for p in settings.root.rglob("*") if p.is_symlink()]
    assert links == []
    assert (secret / "passwd").read_text() == "root:x:0:0\n"  # never touched
    assert sorted(p.name for p in secret.iterdir()) == ["acme-9.0.tar.gz", "passwd"]
    assert "acme-9.0" not in (stable / "acme" / "index.v1_json").read_text()
    assert "Links for acme" in (stable / "acme" / "index.html").read_text()
    assert not report.ok and len(report.quarantined) >= 6, report.quarantined
    quarantine = settings.state / "quarantine"
    assert len([p for p in quarantine.rglob("*") if p.is_symlink()]) == 6


def test_listings_and_metadata_it_did_not_write_are_replaced(settings: Settings) -> None:
    folder = settings.root / "stable" / "acme"
    wheel = write_wheel(folder, "acme", "1.0")
    regenerate(settings)
    written = {p.name: p.read_bytes() for p in folder.iterdir()}
    metadata = folder / f"{wheel.name}.metadata"
    for name in ("index.v1_json", "index.html", f"{wheel.name}.metadata"):
        (folder / name).write_bytes(b"<script>lies</script>")
    (folder / "index.var").unlink()
    (folder / "index.var").write_bytes(b"URI: index.html\n\nURI: evil\n")
    (folder / "acme-1.0.tar.gz.metadata").write_bytes(b"Name: acme\n")  # no such file

    regenerate(settings)

    assert {p.name: p.read_bytes() for p in folder.iterdir()} == written
    assert metadata.read_bytes().startswith(b"Metadata-Version")


def test_a_file_changed_in_place_is_noticed(settings: Settings) -> None:
    folder = settings.root / "stable" / "acme"
    wheel = write_wheel(folder, "acme", "1.0")
    regenerate(settings)
    st = wheel.stat()
    data = bytearray(wheel.read_bytes())
    data[-30] ^= 1  # same size, other bytes, mtime put back
    with open(wheel, "r+b") as f:
        f.write(data)
    os.utime(wheel, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert wheel.stat().st_mtime_ns == st.st_mtime_ns and wheel.stat().st_size == st.st_size

    report = regenerate(settings)

    assert not wheel.exists()
    assert any("published with other bytes" in r for _, r in report.quarantined), report
    assert not (folder / "index.v1_json").exists()  # its only file is gone


def test_unchanged_tree_is_not_rehashed_nor_rewritten(settings: Settings) -> None:
    folder = settings.root / "stable" / "acme"
    write_wheel(folder, "acme", "1.0")
    regenerate(settings)
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}
    report = regenerate(settings)
    assert report.ok and report.listings == 0
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()} == before
