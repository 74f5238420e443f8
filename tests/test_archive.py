from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from distfactory import sdist_bytes, wheel_bytes, write_sdist, write_wheel
from pypi_fallback.archive import inspect_dist
from pypi_fallback.errors import InvalidArchive, MetadataMismatch
from pypi_fallback.names import parse_dist_filename


def inspect(path: Path) -> object:
    return inspect_dist(path, parse_dist_filename(path.name))


def test_wheel_metadata_is_read(tmp_path: Path) -> None:
    path = write_wheel(tmp_path, "Acme.Foo", "1.0", requires_python=">=3.8")
    meta = inspect(path)
    assert meta.name == "Acme.Foo" and meta.version == "1.0"  # type: ignore[attr-defined]
    assert meta.requires_python == ">=3.8"  # type: ignore[attr-defined]
    assert meta.raw.startswith(b"Metadata-Version: 2.1")  # type: ignore[attr-defined]


def test_sdist_metadata_is_read(tmp_path: Path) -> None:
    meta = inspect(write_sdist(tmp_path, "acme", "2.0", requires_python="<4"))
    assert meta.requires_python == "<4"  # type: ignore[attr-defined]


def _write(tmp_path: Path, filename: str, data: bytes) -> Path:
    path = tmp_path / filename
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("missing", ["WHEEL", "METADATA", "RECORD"])
def test_wheel_without_required_file(tmp_path: Path, missing: str) -> None:
    data = wheel_bytes("acme", "1.0", omit=(missing,))
    path = _write(tmp_path, "acme-1.0-py3-none-any.whl", data)
    with pytest.raises(InvalidArchive, match=f"has no acme-1.0.dist-info/{missing}"):
        inspect(path)


@pytest.mark.parametrize(
    ("filename", "data", "error", "message"),
    [
        ("acme-1.0-py3-none-any.whl", b"not a zip", InvalidArchive, "Invalid distribution file"),
        ("acme-1.0.tar.gz", b"\x1f\x8b garbage", InvalidArchive, "Invalid distribution file"),
        ("acme-1.0-py3-none-any.whl", wheel_bytes("other", "1.0"), InvalidArchive,
         "exactly one .dist-info"),
        ("acme-1.0-py3-none-any.whl",
         wheel_bytes("acme", "1.0", metadata="Name: other\nVersion: 1.0\n\n"),
         MetadataMismatch, "Name in metadata 'other'"),
        ("acme-1.0-py3-none-any.whl",
         wheel_bytes("acme", "1.0", metadata="Name: acme\nVersion: 2.0\n\n"),
         MetadataMismatch, "Version in metadata '2.0'"),
        ("acme-1.0-py3-none-any.whl", wheel_bytes("acme", "1.0", extra={"../evil.py": b""}),
         InvalidArchive, "Unsafe path '../evil.py'"),
        ("acme-1.0-py3-none-any.whl", wheel_bytes("acme", "1.0", extra={"/etc/evil": b""}),
         InvalidArchive, "Unsafe path"),
        ("acme-1.0.tar.gz", sdist_bytes("acme", "1.0", members={"acme-1.0/../../x": b""}),
         InvalidArchive, "Unsafe path"),
        ("acme-1.0.tar.gz", sdist_bytes("acme", "1.0", members={"acme-1.0/setup.py": b""}),
         InvalidArchive, "no top-level PKG-INFO"),
        ("acme-1.0.tar.gz", sdist_bytes("acme", "1.1"), MetadataMismatch, "Version in metadata"),
    ],
)
def test_bad_archives_are_refused(tmp_path: Path, filename: str, data: bytes,
                                  error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message.replace(".", r"\.").replace("(", r"\(")):
        inspect(_write(tmp_path, filename, data))


def test_tar_symlink_out_of_tree_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("acme-1.0/link")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(InvalidArchive, match="Unsafe link"):
        inspect(_write(tmp_path, "acme-1.0.tar.gz", buf.getvalue()))


def test_zip_bomb_is_refused_without_unpacking(tmp_path: Path) -> None:
    good = wheel_bytes("acme", "1.0")
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as src, \
            zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for info in src.infolist():
            zf.writestr(info, src.read(info))
        with zf.open("acme/bomb.bin", "w", force_zip64=True) as f:
            block = b"\0" * (1024 * 1024)
            for _ in range(300):  # 300 MiB of zeros, ~300 KiB compressed
                f.write(block)
    with pytest.raises(InvalidArchive, match="zip bomb"):
        inspect(_write(tmp_path, "acme-1.0-py3-none-any.whl", buf.getvalue()))


def test_tar_bomb_is_refused_within_cap(tmp_path: Path) -> None:
    import gzip

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        info = tarfile.TarInfo("acme-1.0/zeros")
        info.size = 300 * 1024 * 1024

        class Zeros(io.RawIOBase):
            left = info.size

            def readinto(self, b: bytearray) -> int:  # type: ignore[override]
                n = min(len(b), self.left)
                b[:n] = b"\0" * n
                self.left -= n
                return n

        tf.addfile(info, Zeros())
    path = _write(tmp_path, "acme-1.0.tar.gz", gzip.compress(raw.getvalue(), 9))
    assert path.stat().st_size < 1024 * 1024
    with pytest.raises(InvalidArchive, match="unpacks to more than the allowed size"):
        inspect(path)


@pytest.mark.parametrize("requires", ["=>3.8", "python3", ">=3.8; rm -rf /"])
def test_invalid_requires_python_is_refused(tmp_path: Path, requires: str) -> None:
    """Listings hand Requires-Python to installers: it must be a valid specifier set."""
    path = write_wheel(tmp_path, "acme", "1.0", requires_python=requires)
    with pytest.raises(InvalidArchive, match="invalid Requires-Python"):
        inspect(path)


def test_valid_requires_python_is_kept(tmp_path: Path) -> None:
    path = write_wheel(tmp_path, "acme", "1.0", requires_python=">=3.8, !=3.9.*")
    assert inspect_dist(path, parse_dist_filename(path.name)).requires_python == \
        ">=3.8, !=3.9.*"


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_bytes_read_once_are_inspected_as_the_file_is(tmp_path: Path, kind: str) -> None:
    """regen-index hashes a new file while reading it and inspects the same bytes: the
    answer is the file's, and a file over the size kept in memory is read from disk."""
    import hashlib

    from pypi_fallback.storage import read_hashed

    path = write_wheel(tmp_path, "acme", "1.0") if kind == "wheel" else \
        write_sdist(tmp_path, "acme", "1.0")
    sha256, data = read_hashed(path, 10 * 1024 * 1024, chunk=64)
    assert sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert data == path.read_bytes()
    dist = parse_dist_filename(path.name)
    assert inspect_dist(path, dist, data) == inspect_dist(path, dist)
    assert read_hashed(path, len(data) - 1, chunk=64) == (sha256, None)
    bad = bytearray(data)
    bad[len(bad) // 2:] = b"\0" * (len(bad) - len(bad) // 2)
    with pytest.raises(InvalidArchive):
        inspect_dist(path, dist, bytes(bad))
