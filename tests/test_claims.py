"""The claims map: a value can never become a key, and a bad line is refused loudly."""

from __future__ import annotations

from pathlib import Path

import pytest
from pypi_fallback.errors import ClaimsCorrupt
from pypi_fallback.names import NormalizedName
from pypi_fallback.storage import (
    CLAIMS_FOLD,
    Tree,
    add_claims,
    is_claimed_here,
    load_claims,
    parse_claims,
    render_claims,
)


def test_round_trip() -> None:
    claims = {NormalizedName("acme"): "unknown-upstream", NormalizedName("secret-x"): "private"}
    assert parse_claims(render_claims(claims).decode()) == claims


@pytest.mark.parametrize(("name", "reason"), [
    ("pubpkg x", "unknown-upstream"), ("pubpkg", "unknown upstream\npubpkg2 private"),
    ("Acme", "private"), ("acme", "anything else"), ("acm\u00e9", "private"), ("", "private"),
])
def test_render_refuses_what_it_could_not_read_back(name: str, reason: str) -> None:
    with pytest.raises(ClaimsCorrupt):
        render_claims({NormalizedName(name): reason})


@pytest.mark.parametrize("line", ["pubpkg x unknown-upstream", "Acme private", "acme",
                                  "acme bogus-reason", "acme\tprivate", "acme  private",
                                  "acme--x private", "-acme private", "acme- private",
                                  "acme_x private", "acme.x private", "acme private ",
                                  "acme privatex", "acme private\r"])
def test_parse_refuses_bad_lines_naming_the_line(line: str) -> None:
    with pytest.raises(ClaimsCorrupt, match="line 2"):
        parse_claims(f"# header\n{line}\n")


def test_first_release_reasons_are_read_as_codes() -> None:
    text = ("# pypi-fallback claims\nacme unknown upstream\nsecret-x private (policy.private)\n"
            "left-pad upstream could not be asked (Upstream timed out: http://127.0.0.1:9/x/); "
            "claimed to fail safe\n")
    assert parse_claims(text) == {"acme": "unknown-upstream", "secret-x": "private",
                                  "left-pad": "unreachable"}


def test_add_claims_keeps_the_file_strict(tmp_path: Path) -> None:
    tree = Tree(tmp_path / "www", tmp_path)
    assert add_claims(tree, {NormalizedName("b"): "published",
                             NormalizedName("a"): "private"}) == ["a", "b"]
    assert add_claims(tree, {NormalizedName("a"): "published"}) == []
    assert tree.claims_new_map.read_text().splitlines()[1:] == ["a private", "b published"]
    with pytest.raises(ClaimsCorrupt):
        add_claims(tree, {NormalizedName("pubpkg x"): "published"})
    assert load_claims(tree) == {"a": "private", "b": "published"}


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()[1:]


def test_a_new_name_rewrites_only_the_small_file_until_it_is_folded(tmp_path: Path) -> None:
    """The bulk is left alone (same inode, same bytes) by new names; at CLAIMS_FOLD names,
    or when asked (a full regen-index), every claim moves into it, in the same format."""
    tree = Tree(tmp_path / "www", tmp_path)
    bulk = {NormalizedName(f"old-{i}"): "published" for i in range(1000)}
    add_claims(tree, bulk, fold=True)
    assert len(lines(tree.claims_map)) == 1000 and lines(tree.claims_new_map) == []
    before = (tree.claims_map.stat().st_ino, tree.claims_map.read_bytes())
    for i in range(CLAIMS_FOLD - 1):
        assert add_claims(tree, {NormalizedName(f"new-{i}"): "unknown-upstream"}) == [f"new-{i}"]
    assert (tree.claims_map.stat().st_ino, tree.claims_map.read_bytes()) == before
    assert len(lines(tree.claims_new_map)) == CLAIMS_FOLD - 1
    claims = load_claims(tree)
    assert claims["new-0"] == "unknown-upstream" and claims["old-3"] == "published"
    assert is_claimed_here(tree, NormalizedName("new-7")) and "nothing" not in claims
    assert len(claims) == len(dict(claims.items())) == 1000 + CLAIMS_FOLD - 1
    assert add_claims(tree, {NormalizedName("old-1"): "private"}) == []  # claimed already
    add_claims(tree, {NormalizedName("last"): "private"})  # the CLAIMS_FOLD-th: folded
    assert lines(tree.claims_new_map) == []
    assert len(lines(tree.claims_map)) == 1000 + CLAIMS_FOLD
    assert lines(tree.claims_map) == sorted(lines(tree.claims_map))
    assert parse_claims(tree.claims_map.read_text()) == {
        **bulk, **{f"new-{i}": "unknown-upstream" for i in range(CLAIMS_FOLD - 1)},
        "last": "private"}
    add_claims(tree, {NormalizedName("one-more"): "published"})
    add_claims(tree, {}, fold=True)
    assert lines(tree.claims_new_map) == [] and "one-more published" in lines(tree.claims_map)


@pytest.mark.parametrize("name", ["claims.map", "claims.new.map"])
def test_either_file_is_checked_on_every_read(tmp_path: Path, name: str) -> None:
    """A file is parsed once per version of it: an edit (however small) is read again, and
    a bad line stops the reader, naming the file and the line."""
    tree = Tree(tmp_path / "www", tmp_path)
    add_claims(tree, {NormalizedName("acme"): "private"})
    assert is_claimed_here(tree, NormalizedName("acme"))
    (tmp_path / name).write_text("# claims\nacme private\nother bogus\n")
    with pytest.raises(ClaimsCorrupt, match=f"{name}, line 3"):
        load_claims(tree)
    with pytest.raises(ClaimsCorrupt):
        is_claimed_here(tree, NormalizedName("zzz"))
    (tmp_path / name).write_text("# claims\n")
    assert not is_claimed_here(tree, NormalizedName("other"))
