from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_config
from pypi_fallback.config import load_settings
from pypi_fallback.errors import ConfigError


def test_example_style_config_loads(config_file: Path) -> None:
    s = load_settings(config_file)
    assert list(s.repos) == ["dev", "stable"]
    assert s.chain("dev") == ("dev", "stable")
    assert s.dependents("stable") == ("stable", "dev")
    assert s.repos["dev"].falls_back_upstream
    assert s.url_prefix == "/pypi" and s.fallback_mode == "redirect"
    assert s.max_upload_bytes == 2 * 1024 * 1024


def test_config_path_from_environment(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYPI_FALLBACK_CONFIG", str(config_file))
    assert load_settings().source == config_file


@pytest.mark.parametrize(
    ("extra", "repos", "message"),
    [
        ("[server2]\n", None, "unknown section [server2]"),
        ("[policy]\noverlays = []\n", None, "unknown key policy.overlays"),
        ("[policy]\nprivate = 'acme-*'\n", None, "policy.private must be a list"),
        ("", '[repos.dev]\nfallback = ["qa"]\n',
         "repos.dev.fallback names unknown repository 'qa'"),
        ("", '[repos.a]\nfallback = ["b"]\n[repos.b]\nfallback = ["a"]\n', "cycle: a -> b -> a"),
        ("", '[repos.dev]\nwritrs = []\n', "unknown key repos.dev.writrs"),
        ("", '[repos.Dev]\n', "repository name"),
        ("", "", "[repos] must define at least one repository"),
        ("", '[repos.dev]\nwriters = "qc"\n', "repos.dev.writers must be a list"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, extra: str, repos: str | None,
                                    message: str) -> None:
    path = write_config(tmp_path, extra, repos=repos)
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    assert message in str(exc.value)
    assert str(path) in str(exc.value)


def test_missing_root_is_named(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace(str(tmp_path / "www"), "/nonexistent/www"))
    with pytest.raises(ConfigError, match="server.root: directory '/nonexistent/www' does not"):
        load_settings(path)


def test_wrong_type_and_bad_toml(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("max_upload_mb = 2", 'max_upload_mb = "2"'))
    with pytest.raises(ConfigError, match="server.max_upload_mb must be an integer, not '2'"):
        load_settings(path)
    path.write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml")


def test_unknown_fallback_mode(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fallback.mode must be one of redirect, cache"):
        load_settings(write_config(tmp_path, mode="proxy"))


@pytest.mark.parametrize("pattern", ["Acme-*", "acme_*", "a[bc]", ""])
def test_policy_patterns_are_normalized_names(tmp_path: Path, pattern: str) -> None:
    with pytest.raises(ConfigError, match="policy.private: .* is not a pattern"):
        load_settings(write_config(tmp_path, f'[policy]\nprivate = ["{pattern}"]\n'))


def test_listing_max_age(tmp_path: Path) -> None:
    assert load_settings(write_config(tmp_path)).listing_max_age == 30
    settings = load_settings(write_config(tmp_path, server="listing_max_age = 0\n"))
    assert settings.listing_cache_control == "public, max-age=0, stale-if-error=604800"
    with pytest.raises(ConfigError, match="server.listing_max_age must be 0 or more seconds"):
        load_settings(write_config(tmp_path, server="listing_max_age = -1\n"))
