"""The one TOML configuration file, loaded once into frozen settings.

Every error names the file and the key, so a sysadmin can fix it without
reading a traceback.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cooldown import Cooldown, parse_cooldown
from .errors import ConfigError

DEFAULT_PATH = Path("/etc/pypi-fallback/config.toml")
ENV_VAR = "PYPI_FALLBACK_CONFIG"
UPSTREAM = "upstream"
FALLBACK_MODES = ("redirect", "cache")
FORM_OVERHEAD_MB = 16
# Distributions and their metadata never change once published: any cache may keep them.
IMMUTABLE = "public, max-age=31536000, immutable"
# How long a cache may serve a stale listing while the origin answers errors or is down.
STALE_IF_ERROR = 7 * 24 * 3600


@dataclass(frozen=True)
class Repo:
    name: str
    writers: tuple[str, ...]
    fallback: tuple[str, ...]

    @property
    def local_chain(self) -> tuple[str, ...]:
        """The local repos this one falls back to, nearest first (not itself)."""
        return tuple(r for r in self.fallback if r != UPSTREAM)

    @property
    def falls_back_upstream(self) -> bool:
        return UPSTREAM in self.fallback


@dataclass(frozen=True)
class Settings:
    source: Path
    root: Path
    state: Path
    url_prefix: str = "/pypi"
    htpasswd: Path = Path("/etc/pypi-fallback/htpasswd")
    htgroups: Path = Path("/etc/pypi-fallback/htgroups")
    max_upload_mb: int = 100
    listing_max_age: int = 30
    upstream_url: str = ""
    upstream_timeout: float = 10.0
    upstream_ttl: int = 600
    fallback_mode: str = "redirect"
    repos: Mapping[str, Repo] = field(default_factory=dict)
    private: tuple[str, ...] = ()
    overlay: tuple[str, ...] = ()
    pages: bool = True  # the pages for people under <prefix>/+pages/ and at <prefix>/
    cooldown: Cooldown = field(default_factory=Cooldown)  # policy.min_age, freeze, exceptions

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def max_request_bytes(self) -> int:
        """The largest upload request: the file, and room for the form's metadata fields
        (a long description)."""
        return self.max_upload_bytes + FORM_OVERHEAD_MB * 1024 * 1024

    @property
    def listing_cache_control(self) -> str:
        """Cache-Control of listings, pages and redirects: fresh for a short time, then
        revalidated; served stale when the origin fails."""
        return (f"public, max-age={self.listing_max_age}, "
                f"stale-if-error={STALE_IF_ERROR}")

    def reaches_upstream(self, repo: str) -> bool:
        """Whether a project missing all down the chain of ``repo`` is looked up upstream."""
        return any(self.repos[r].falls_back_upstream for r in self.chain(repo))

    def is_private(self, project: str) -> bool:
        return any(fnmatch.fnmatchcase(project, p) for p in self.private)

    def is_overlay(self, project: str) -> bool:
        return any(fnmatch.fnmatchcase(project, p) for p in self.overlay)

    def chain(self, repo: str) -> tuple[str, ...]:
        """``repo`` and every local repo reachable down its fallback chain, nearest first."""
        cache: dict[str, tuple[str, ...]] = self.__dict__.setdefault("_chains", {})
        if repo not in cache:
            cache[repo] = self._walk_chain(repo)
        return cache[repo]

    def _walk_chain(self, repo: str) -> tuple[str, ...]:
        seen: list[str] = []
        todo = [repo]
        while todo:
            name = todo.pop(0)
            if name in seen:
                continue
            seen.append(name)
            todo.extend(self.repos[name].local_chain)
        return tuple(seen)

    def dependents(self, repo: str) -> tuple[str, ...]:
        """Every repo whose listings include ``repo``'s files (``repo`` itself first)."""
        return (repo,) + tuple(r for r in self.repos if r != repo and repo in self.chain(r))

    def viewers(self, repos: Iterable[str]) -> tuple[str, ...]:
        """Every repo whose root listing shows projects of any of ``repos``."""
        wanted = set(repos)
        return tuple(r for r in self.repos if wanted & set(self.chain(r)))


# key -> (type(s), default); a default of ... means required
_SECTIONS: dict[str, dict[str, tuple[type | tuple[type, ...], Any]]] = {
    "server": {
        "root": (str, ...),
        "state": (str, ...),
        "url_prefix": (str, "/pypi"),
        "htpasswd": (str, "/etc/pypi-fallback/htpasswd"),
        "htgroups": (str, "/etc/pypi-fallback/htgroups"),
        "max_upload_mb": (int, 100),
        "listing_max_age": (int, 30),
        "pages": (bool, True),
    },
    "upstream": {
        "url": (str, ""),
        "timeout": ((int, float), 10),
        "ttl": (int, 600),
    },
    "fallback": {"mode": (str, "redirect")},
    "policy": {"private": (list, []), "overlay": (list, []), "min_age": (str, "0"),
               "exceptions": (list, []), "freeze": ((str, dt.date), None)},
}
_PATTERN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-*?")
_TYPE_WORDS: dict[type | tuple[type, ...], str] = {
    str: "a string", int: "an integer", list: "a list of strings", bool: "true or false",
    (str, dt.date): "a date or a time",
}
_REPO_KEYS: dict[str, tuple[type | tuple[type, ...], Any]] = {
    "writers": (list, []),
    "fallback": (list, []),
}


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--config PATH``, else ``$PYPI_FALLBACK_CONFIG``, else the system default."""
    if explicit:
        return Path(explicit)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    return DEFAULT_PATH


def load_settings(path: str | os.PathLike[str] | None = None, *,
                  check_paths: bool = True) -> Settings:
    source = config_path(path)
    try:
        with open(source, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{source}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read config: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return parse_settings(data, source, check_paths=check_paths)


def _get(
    source: Path,
    table: Mapping[str, Any],
    section: str,
    spec: Mapping[str, tuple[type | tuple[type, ...], Any]],
) -> dict[str, Any]:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{source}: [{section}] must be a table")
    for key in table:
        if key not in spec:
            known = ", ".join(spec)
            raise ConfigError(f"{source}: unknown key {section}.{key} (known keys: {known})")
    values: dict[str, Any] = {}
    for key, (kind, default) in spec.items():
        if key not in table:
            if default is ...:
                raise ConfigError(f"{source}: missing required key {section}.{key}")
            values[key] = default
            continue
        value = table[key]
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            want = _TYPE_WORDS.get(kind, "a number")
            raise ConfigError(f"{source}: {section}.{key} must be {want}, not {value!r}")
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{source}: {section}.{key} must be a list of strings")
        values[key] = value
    return values


def _existing_dir(source: Path, key: str, value: str, check: bool) -> Path:
    path = Path(value)
    if not path.is_absolute():
        raise ConfigError(f"{source}: {key} must be an absolute path, not {value!r}")
    if check and not path.is_dir():
        raise ConfigError(f"{source}: {key}: directory {value!r} does not exist")
    return path


def parse_settings(data: Mapping[str, Any], source: Path, *, check_paths: bool = True
                   ) -> Settings:
    """Settings from parsed TOML; ``check_paths=False`` skips the folders-exist check
    (for rendering the example config)."""
    for section in data:
        if section not in _SECTIONS and section != "repos":
            known = ", ".join([*_SECTIONS, "repos"])
            raise ConfigError(f"{source}: unknown section [{section}] (known: {known})")
    server = _get(source, data.get("server", {}), "server", _SECTIONS["server"])
    upstream = _get(source, data.get("upstream", {}), "upstream", _SECTIONS["upstream"])
    fallback = _get(source, data.get("fallback", {}), "fallback", _SECTIONS["fallback"])
    policy = _get(source, data.get("policy", {}), "policy", _SECTIONS["policy"])

    root = _existing_dir(source, "server.root", server["root"], check_paths)
    state = _existing_dir(source, "server.state", server["state"], check_paths)
    if root == state or state.is_relative_to(root):
        raise ConfigError(
            f"{source}: server.state must be outside server.root (it is never served)"
        )
    prefix = server["url_prefix"].rstrip("/")
    if not prefix.startswith("/") or any(c in prefix for c in " \t\"'<>\\%?#"):
        raise ConfigError(f"{source}: server.url_prefix must be a URL path like '/pypi'")
    if server["max_upload_mb"] < 1:
        raise ConfigError(f"{source}: server.max_upload_mb must be at least 1")
    if server["listing_max_age"] < 0:
        raise ConfigError(f"{source}: server.listing_max_age must be 0 or more seconds")
    if fallback["mode"] not in FALLBACK_MODES:
        raise ConfigError(
            f"{source}: fallback.mode must be one of {', '.join(FALLBACK_MODES)}, "
            f"not {fallback['mode']!r}"
        )
    url = upstream["url"]
    if url and not url.startswith(("http://", "https://")):
        raise ConfigError(f"{source}: upstream.url must be an http(s) URL, not {url!r}")
    if upstream["timeout"] <= 0:
        raise ConfigError(f"{source}: upstream.timeout must be positive")

    for key in ("private", "overlay"):
        for pattern in policy[key]:
            if not pattern or any(c not in _PATTERN_CHARS for c in pattern):
                raise ConfigError(
                    f"{source}: policy.{key}: {pattern!r} is not a pattern of normalized names "
                    "(lowercase letters, digits, '-', and the wildcards '*' and '?')"
                )
    repos = _parse_repos(source, data.get("repos", {}))
    return Settings(
        source=source,
        root=root,
        state=state,
        url_prefix=prefix,
        htpasswd=Path(server["htpasswd"]),
        htgroups=Path(server["htgroups"]),
        max_upload_mb=server["max_upload_mb"],
        listing_max_age=server["listing_max_age"],
        upstream_url=url.rstrip("/") + "/" if url else "",
        upstream_timeout=float(upstream["timeout"]),
        upstream_ttl=upstream["ttl"],
        fallback_mode=fallback["mode"],
        repos=repos,
        private=tuple(policy["private"]),
        overlay=tuple(policy["overlay"]),
        pages=server["pages"],
        cooldown=parse_cooldown(source, policy),
    )


def _parse_repos(source: Path, table: Any) -> dict[str, Repo]:
    if not isinstance(table, Mapping) or not table:
        raise ConfigError(f"{source}: [repos] must define at least one repository")
    repos: dict[str, Repo] = {}
    for name, body in table.items():
        key = f"repos.{name}"
        if name == UPSTREAM or name.startswith("+") or not _is_repo_name(name):
            raise ConfigError(
                f"{source}: [{key}]: a repository name is lowercase letters, digits and '-'"
                f" and not {UPSTREAM!r}"
            )
        values = _get(source, body, key, _REPO_KEYS)
        repos[name] = Repo(name, tuple(values["writers"]), tuple(values["fallback"]))
    for repo in repos.values():
        for target in repo.fallback:
            if target != UPSTREAM and target not in repos:
                raise ConfigError(
                    f"{source}: repos.{repo.name}.fallback names unknown repository {target!r}"
                )
    for repo in repos.values():
        _check_cycle(source, repos, repo.name)
    return repos


def _check_cycle(source: Path, repos: Mapping[str, Repo], start: str) -> None:
    def walk(name: str, path: tuple[str, ...]) -> None:
        for nxt in repos[name].local_chain:
            if nxt in path:
                cycle = " -> ".join((*path, nxt))
                raise ConfigError(f"{source}: repos.{start}.fallback has a cycle: {cycle}")
            walk(nxt, (*path, nxt))

    walk(start, (start,))


def _is_repo_name(name: str) -> bool:
    return bool(name) and all(c.isascii() and (c.isalnum() and not c.isupper() or c == "-")
                              for c in name)
