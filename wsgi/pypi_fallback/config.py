"""The one TOML configuration file, loaded once into frozen settings.

Every error names the file and the key, so a sysadmin can fix it without
reading a traceback.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cooldown import Cooldown, parse_cooldown
from .errors import ConfigError
from .names import RepoName

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
    name: RepoName
    writers: tuple[str, ...]
    fallback: tuple[str, ...]  # repo names, and UPSTREAM
    readers: tuple[str, ...] = ()  # empty: anyone may read

    @property
    def restricted(self) -> bool:
        return bool(self.readers)

    @property
    def read_groups(self) -> tuple[str, ...]:
        """Who may read a restricted repo: its readers, and its writers (an uploader may
        look at what is there, e.g. ``uv publish --check-url``)."""
        return tuple(dict.fromkeys(self.readers + self.writers))

    @property
    def local_chain(self) -> tuple[RepoName, ...]:
        """The local repos this one falls back to, nearest first (not itself)."""
        return tuple(RepoName(r) for r in self.fallback if r != UPSTREAM)

    @property
    def falls_back_upstream(self) -> bool:
        return UPSTREAM in self.fallback


@dataclass(frozen=True)
class Ldap:
    """People authenticate against a directory (mod_authnz_ldap) instead of htpasswd;
    ``groups`` maps the group names used in ``writers``/``readers`` to group DNs."""

    url: str
    bind_dn: str = ""
    bind_password_file: Path | None = None
    groups: Mapping[str, str] = field(default_factory=dict)


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
    repos: Mapping[RepoName, Repo] = field(default_factory=dict)
    private: tuple[str, ...] = ()
    overlay: tuple[str, ...] = ()
    pages: bool = True  # the pages for people under <prefix>/+pages/ and at <prefix>/
    ldap: Ldap | None = None
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

    def repo_named(self, name: str) -> RepoName | None:
        """The repository called ``name`` in the config, if there is one."""
        return next((r for r in self.repos if r == name), None)

    def reaches_upstream(self, repo: RepoName) -> bool:
        """Whether a project missing all down the chain of ``repo`` is looked up upstream."""
        return any(self.repos[r].falls_back_upstream for r in self.chain(repo))

    def is_private(self, project: str) -> bool:
        return any(fnmatch.fnmatchcase(project, p) for p in self.private)

    def is_overlay(self, project: str) -> bool:
        return any(fnmatch.fnmatchcase(project, p) for p in self.overlay)

    def chain(self, repo: RepoName) -> tuple[RepoName, ...]:
        """``repo`` and every local repo reachable down its fallback chain, nearest first."""
        cache: dict[RepoName, tuple[RepoName, ...]] = self.__dict__.setdefault("_chains", {})
        if repo not in cache:
            cache[repo] = self._walk_chain(repo)
        return cache[repo]

    def _walk_chain(self, repo: RepoName) -> tuple[RepoName, ...]:
        seen: list[RepoName] = []
        todo = [repo]
        while todo:
            name = todo.pop(0)
            if name in seen:
                continue
            seen.append(name)
            todo.extend(self.repos[name].local_chain)
        return tuple(seen)

    def dependents(self, repo: RepoName) -> tuple[RepoName, ...]:
        """Every repo whose listings include ``repo``'s files (``repo`` itself first)."""
        return (repo,) + tuple(r for r in self.repos if r != repo and repo in self.chain(r))

    def viewers(self, repos: Iterable[RepoName]) -> tuple[RepoName, ...]:
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
    dict: "a table",
    (str, dt.date): "a date or a time",
}
_REPO_KEYS: dict[str, tuple[type | tuple[type, ...], Any]] = {
    "writers": (list, []),
    "fallback": (list, []),
    "readers": (list, []),
}
_LDAP_KEYS: dict[str, tuple[type | tuple[type, ...], Any]] = {
    "url": (str, ...),
    "bind_dn": (str, ""),
    "bind_password_file": (str, ""),
    "groups": (dict, {}),
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
        if section not in _SECTIONS and section not in ("repos", "ldap"):
            known = ", ".join([*_SECTIONS, "repos", "ldap"])
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
    restricted = [r.name for r in repos.values() if r.restricted]
    if server["pages"] and restricted:
        # the pages (landing page, search index, project pages) are one static set for
        # everyone: they would show the projects of a repository not everyone may read
        raise ConfigError(
            f"{source}: server.pages must be false while a repository has readers "
            f"({', '.join(f'repos.{r}.readers' for r in restricted)}): the pages for people "
            "are shown to anyone and would list its projects")
    ldap = _parse_ldap(source, data["ldap"], repos) if "ldap" in data else None
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
        ldap=ldap,
        cooldown=parse_cooldown(source, policy),
    )


def _parse_repos(source: Path, table: Any) -> dict[RepoName, Repo]:
    if not isinstance(table, Mapping) or not table:
        raise ConfigError(f"{source}: [repos] must define at least one repository")
    repos: dict[RepoName, Repo] = {}
    for name, body in table.items():
        key = f"repos.{name}"
        if name == UPSTREAM or name.startswith("+") or not _is_repo_name(name):
            raise ConfigError(
                f"{source}: [{key}]: a repository name is lowercase letters, digits and '-'"
                f" and not {UPSTREAM!r}"
            )
        values = _get(source, body, key, _REPO_KEYS)
        for group in values["writers"] + values["readers"]:
            if not _GROUP.match(group):
                raise ConfigError(f"{source}: {key}: {group!r} is not a group name (letters, "
                                  "digits, '.', '_' and '-')")
        repos[RepoName(name)] = Repo(RepoName(name), tuple(values["writers"]),
                                     tuple(values["fallback"]), tuple(values["readers"]))
    for repo in repos.values():
        for target in repo.fallback:
            if target != UPSTREAM and target not in repos:
                raise ConfigError(
                    f"{source}: repos.{repo.name}.fallback names unknown repository {target!r}"
                )
    for repo in repos.values():
        _check_cycle(source, repos, repo.name)
    for repo in repos.values():
        _check_readers(source, repos, repo)
    return repos


def _check_readers(source: Path, repos: Mapping[RepoName, Repo], repo: Repo) -> None:
    """A repo's pages merge the files of every repo down its chain, and a project it lacks
    is redirected there: so whoever may read ``repo`` must be allowed to read each of
    them, or their files and project names would leak through ``repo``'s pages and
    redirects. Checked on group names: every group that may read ``repo`` may read each."""
    seen: set[str] = set()
    todo = list(repo.local_chain)
    while todo:
        target = repos[todo.pop(0)]
        if target.name in seen:
            continue
        seen.add(target.name)
        todo.extend(target.local_chain)
        if not target.restricted:
            continue
        allowed = set(target.read_groups)
        if not repo.restricted:
            who = "anyone"
        else:
            extra = [g for g in repo.read_groups if g not in allowed]
            if not extra:
                continue
            who = "the groups " + ", ".join(extra)
        raise ConfigError(
            f"{source}: repos.{repo.name}: {who} may read {repo.name!r}, whose pages show the "
            f"files and project names of {target.name!r} (down its fallback chain), but only "
            f"the groups {', '.join(target.read_groups)} may read {target.name!r}: give "
            f"repos.{repo.name}.readers groups that may read {target.name!r}, or take "
            f"{target.name!r} out of repos.{repo.name}.fallback"
        )


_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# what may go into the drop-in between double quotes (an LDAP URL or DN)
_LDAP_SAFE = re.compile(r"^[A-Za-z0-9 =,.:/?()*&|!_@+-]+$")


def _parse_ldap(source: Path, table: Any, repos: Mapping[RepoName, Repo]) -> Ldap:
    values = _get(source, table, "ldap", _LDAP_KEYS)
    url = values["url"]
    if not url.startswith(("ldap://", "ldaps://")) or not _LDAP_SAFE.match(url):
        raise ConfigError(f"{source}: ldap.url must be an ldap:// or ldaps:// URL like "
                          "'ldap://host/ou=people,dc=example,dc=org?uid', not {url!r}")
    if values["bind_dn"] and not _LDAP_SAFE.match(values["bind_dn"]):
        raise ConfigError(f"{source}: ldap.bind_dn {values['bind_dn']!r} is not a plain DN")
    password_file = None
    if values["bind_password_file"]:
        password_file = Path(values["bind_password_file"])
        if not password_file.is_absolute():
            raise ConfigError(f"{source}: ldap.bind_password_file must be an absolute path")
    if bool(values["bind_dn"]) != bool(password_file):
        raise ConfigError(f"{source}: ldap.bind_dn and ldap.bind_password_file go together "
                          "(neither: Apache searches the directory anonymously)")
    groups: dict[str, str] = {}
    for group, dn in values["groups"].items():
        if not isinstance(dn, str) or not _LDAP_SAFE.match(dn):
            raise ConfigError(f"{source}: ldap.groups.{group} must be a group's DN, like "
                              "'cn=developers,ou=groups,dc=example,dc=org'")
        groups[group] = dn
    for repo in repos.values():
        for key, names in (("writers", repo.writers), ("readers", repo.readers)):
            for group in names:
                if group not in groups:
                    raise ConfigError(
                        f"{source}: repos.{repo.name}.{key} names group {group!r}, which "
                        f"ldap.groups does not map to a directory group (add "
                        f"{group} = \"cn=...\" under [ldap.groups])")
    return Ldap(url, values["bind_dn"], password_file, groups)


def _check_cycle(source: Path, repos: Mapping[RepoName, Repo], start: RepoName) -> None:
    def walk(name: RepoName, path: tuple[str, ...]) -> None:
        for nxt in repos[name].local_chain:
            if nxt in path:
                cycle = " -> ".join((*path, nxt))
                raise ConfigError(f"{source}: repos.{start}.fallback has a cycle: {cycle}")
            walk(nxt, (*path, nxt))

    walk(start, (start,))


def _is_repo_name(name: str) -> bool:
    return bool(name) and all(c.isascii() and (c.isalnum() and not c.isupper() or c == "-")
                              for c in name)
