"""The claims map: a value can never become a key, and a bad line is refused loudly."""

from __future__ import annotations

from pathlib import Path

import pytest
from pypi_fallback.errors import ClaimsCorrupt
from pypi_fallback.names import NormalizedName
from pypi_fallback.storage import Tree, add_claims, load_claims, parse_claims, render_claims


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
                                  "acme bogus-reason", "acme\tprivate", "acme  private"])
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
    assert tree.claims_map.read_text().splitlines()[1:] == ["a private", "b published"]
    with pytest.raises(ClaimsCorrupt):
        add_claims(tree, {NormalizedName("pubpkg x"): "published"})
    assert load_claims(tree) == {"a": "private", "b": "published"}
