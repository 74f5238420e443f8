from __future__ import annotations

import pytest
from packaging.version import Version
from pypi_fallback.errors import InvalidFilename, InvalidName
from pypi_fallback.names import parse_dist_filename, parse_normalized_name, parse_project_name


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
        ("a" * 250 + "-1.0.tar.gz", "longer than 242 bytes"),
        # 243 bytes: <file>.attestations would be 256
        ("a" * 232 + "-1.0.tar.gz", "room for the files kept beside it"),
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


BAD_NAMES = ["pubpkg x", "pub;pkg", "pub#pkg", "pub%pkg", 'pub"pkg', "pub'pkg", "pub<pkg",
             "pub\tpkg", "acmé", "\u017fix", "\u212aelvin", "pubpkg\n", "", "-pubpkg",
             "pubpkg.", "pub/pkg", "pub pkg\u00a0", "pub\x00pkg", "pub?pkg"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_project_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidName, match="Invalid project name"):
        parse_project_name(name)


@pytest.mark.parametrize("name", [n for n in BAD_NAMES if n and "/" not in n and "\x00" not in n
                                  and "\n" not in n and "\t" not in n])
def test_sdist_and_wheel_names_are_validated_too(name: str) -> None:
    """packaging's sdist parser takes any name (``pubpkg x-1.0.tar.gz``): checked here."""
    for filename in (f"{name}-1.0.tar.gz", f"{name}-1.0-py3-none-any.whl"):
        with pytest.raises(InvalidFilename):
            parse_dist_filename(filename)


@pytest.mark.parametrize(("name", "project"), [("Acme.Widgets", "acme-widgets"),
                                               ("a", "a"), ("A__B--c", "a-b-c")])
def test_valid_names_are_normalized(name: str, project: str) -> None:
    assert parse_project_name(name) == project


@pytest.mark.parametrize("name", ["Acme", "a_b", "a.b", "a--b"])
def test_names_that_must_be_normalized_already(name: str) -> None:
    with pytest.raises(InvalidName, match="not normalized"):
        parse_normalized_name(name)
    assert parse_normalized_name(parse_project_name(name)) == parse_project_name(name)
