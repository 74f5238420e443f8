from __future__ import annotations

import pytest
from packaging.version import Version
from pypi_fallback.errors import InvalidFilename
from pypi_fallback.names import parse_dist_filename


@pytest.mark.parametrize(
    ("filename", "project", "version", "kind"),
    [
        ("acme-1.0-py3-none-any.whl", "acme", "1.0", "wheel"),
        ("Acme_Foo-2.0rc1-py3-none-any.whl", "acme-foo", "2.0rc1", "wheel"),
        ("acme_foo-1.0-1-cp311-cp311-manylinux_2_17_x86_64.whl", "acme-foo", "1.0", "wheel"),
        ("acme_foo-1.0.tar.gz", "acme-foo", "1.0", "sdist"),
        ("acme.foo-1.0.post1.tar.gz", "acme-foo", "1.0.post1", "sdist"),
        ("acme-1.0.zip", "acme", "1.0", "sdist"),
    ],
)
def test_valid_filenames_parse(filename: str, project: str, version: str, kind: str) -> None:
    dist = parse_dist_filename(filename)
    assert (dist.project, dist.version, dist.kind) == (project, Version(version), kind)


@pytest.mark.parametrize(
    ("filename", "reason"),
    [
        ("", "empty"),
        ("../acme-1.0.tar.gz", "path separator"),
        ("acme/../../x-1.0.tar.gz", "path separator"),
        ("acme\\x-1.0.tar.gz", "path separator"),
        ("acme..x-1.0.tar.gz", "path trick"),
        (".acme-1.0.tar.gz", "path trick"),
        ("acme-1.0\n.tar.gz", "control character"),
        ("acme-1.0\x00.tar.gz", "control character"),
        ("a" * 250 + "-1.0.tar.gz", "longer than 255 bytes"),
        ("acme-1.0.exe", "Invalid file extension"),
        ("acme-1.0.tar.bz2", "Invalid file extension"),
        ("acme-1.0.egg", "Invalid file extension"),
        ("x.php.tar.gz", "Invalid distribution filename"),
        ("acme.tar.gz", "Invalid distribution filename"),
        ("acme-notaversion!-py3-none-any.whl", "Invalid distribution filename"),
        ("acme-1.0-py3-none.whl", "Invalid distribution filename"),
    ],
)
def test_bad_filenames_are_refused_with_reason(filename: str, reason: str) -> None:
    with pytest.raises(InvalidFilename, match=reason.replace(".", r"\.")):
        parse_dist_filename(filename)
