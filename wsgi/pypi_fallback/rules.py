"""The Apache drop-in, rendered from the config by a template kept in ``apache/``.

``render_rules`` is pure: settings and a few facts about the host in, text out.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2

from .config import IMMUTABLE, Settings
from .errors import ConfigError
from .storage import UPSTREAM_DIR

TEMPLATE = "pypi-fallback.conf.j2"
REPLICA_TEMPLATE = "pypi-fallback-replica.conf.j2"
# The Apache modules a replica needs besides the core ones (a2enmod).
REPLICA_MODULES = ("proxy", "proxy_http", "cache", "cache_disk", "rewrite", "headers", "env",
                   "wsgi")
# Debian's mod_cache_disk folder, which its apache-htcacheclean service keeps in check.
DEFAULT_CACHE_ROOT = Path("/var/cache/apache2/mod_cache_disk")
# A replica's distributions and metadata (www-data's to write).
DEFAULT_FILES_ROOT = Path("/var/cache/pypi-fallback/replica")
REPLICA_SCRIPT = "pypi_fallback_replica.wsgi"
# The CA certificates an https primary's certificate is checked against (Debian's bundle).
DEFAULT_CA_FILE = Path("/etc/ssl/certs/ca-certificates.crt")
WSGI_SCRIPT = "pypi_fallback.wsgi"
AUTH_SCRIPT = "pypi_fallback_auth.wsgi"  # mod_wsgi's auth provider for upload tokens
_SAFE_URL = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$")


@dataclass(frozen=True)
class Host:
    """What the drop-in needs to know about the machine it runs on."""

    venv: Path
    wsgi_script: Path
    user: str = "www-data"
    group: str = "www-data"
    in_vhost: bool = False  # included in one <VirtualHost>: no server-wide directives

    @property
    def auth_script(self) -> Path:
        """Installed next to the WSGI script."""
        return self.wsgi_script.with_name(AUTH_SCRIPT)


def share_dir() -> Path:
    """Where the template is: the checkout's ``apache/`` when run from one, else the data
    installed with the package (``<venv>/share/pypi-fallback``)."""
    checkout = Path(__file__).resolve().parents[2] / "apache"
    if (checkout / TEMPLATE).exists():
        return checkout
    return Path(sys.prefix) / "share" / "pypi-fallback"


def default_host() -> Host:
    """This venv, and the WSGI script installed with it (Apache must be able to read it)."""
    script = Path(sys.prefix) / "share" / "pypi-fallback" / WSGI_SCRIPT
    return Host(venv=Path(sys.prefix), wsgi_script=script)


def glob_to_regex(pattern: str) -> str:
    """A ``policy`` pattern (normalized name, ``*`` and ``?``) as a PCRE fragment."""
    return "".join("[a-z0-9-]*" if c == "*" else "[a-z0-9-]" if c == "?" else re.escape(c)
                   for c in pattern)


def check_redirect_url(url: str, key: str, source: Path) -> str:
    if not _SAFE_URL.fullmatch(url):
        raise ConfigError(
            f"{source}: {key} {url!r} cannot be used in a redirect rule: use a plain "
            "http(s)://host[:port]/path URL"
        )
    return url if url.endswith("/") else url + "/"


_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/+@-]*$")


def check_path(path: Path, key: str, source: Path) -> Path:
    """A path going into the drop-in: nothing Apache or mod_rewrite would interpret."""
    if not _SAFE_PATH.fullmatch(str(path)):
        raise ConfigError(f"{source}: {key} {str(path)!r} cannot go into the Apache config: "
                          "use an absolute path of letters, digits and . _ / + @ -")
    return path


def rules_context(settings: Settings, host: Host, upstream_url: str) -> dict[str, Any]:
    src = settings.source
    for key, path in [("server.root", settings.root), ("server.state", settings.state),
                      ("server.htpasswd", settings.htpasswd),
                      ("server.htgroups", settings.htgroups), ("config file", src),
                      ("venv", host.venv), ("WSGI script", host.wsgi_script)]:
        check_path(path, key, src)
    ldap = settings.ldap
    if ldap and ldap.bind_password_file:
        check_path(ldap.bind_password_file, "ldap.bind_password_file", src)
    cache = settings.fallback_mode == "cache"
    repos = []
    for name, repo in settings.repos.items():
        chain = settings.chain(name)
        hops = [{"target": target, "skipped": chain[1:i]} for i, target in
                enumerate(chain) if i > 0]
        repos.append({
            "name": name,
            "writers": list(repo.writers),
            "fallback": list(repo.fallback),
            "local_hops": hops,
            "locals": list(chain),
            "upstream": settings.reaches_upstream(name),
            "readers": list(repo.readers),
            "read_groups": list(repo.read_groups),
            "reader_dns": [ldap.groups[g] for g in repo.read_groups] if ldap else [],
            "writer_dns": [ldap.groups[g] for g in repo.writers] if ldap else [],
            # a project no local repo holds: (the path after its name, the rule's flags);
            # cache mode serves the +upstream page in place (an internal rewrite) where
            # the repo has no readers, and redirects the name without its slash to it
            "upstream_rules": [("/", "L"), ("", "R=302,L")] if cache and not repo.readers
            else [("/?", "R=302,L")],
        })
    limit = settings.max_request_bytes
    return {
        "source": settings.source,
        "prefix": settings.url_prefix,
        "prefix_re": re.escape(settings.url_prefix),
        "root": settings.root,
        "htpasswd": settings.htpasswd,
        "htgroups": settings.htgroups,
        "claims_map": settings.state / "claims.map",  # storage.Tree.claims_map
        "claims_new_map": settings.state / "claims.new.map",  # storage.Tree.claims_new_map
        "fresh_dir": settings.state / "fresh",  # mirror.FRESH_DIR: listings' freshness stamps
        "upstream_listings": settings.state / "upstream",  # mirror.listing_path's folder
        "repos": repos,
        "repo_alternation": "|".join(re.escape(r) for r in settings.repos),
        "private_re": "|".join(glob_to_regex(p) for p in settings.private),
        "upstream_target": f"{settings.url_prefix}/+upstream/" if cache else
        check_redirect_url(upstream_url, "upstream.url", settings.source),
        "cache_mode": cache,
        # the fills' own daemon: only where fills and refreshes are routine
        "fill_daemon": cache or bool(settings.overlay),
        "listing_cache_control": settings.listing_cache_control,
        "immutable": IMMUTABLE,
        "served_alternation": "|".join([re.escape(r) for r in settings.repos]
                                       + ([re.escape(UPSTREAM_DIR)] if cache else [])),
        "limit_request_body": min(limit, 2**31 - 1),
        # long enough for the largest upload at ~1 MB/s, and never under five minutes
        "request_timeout": max(300, settings.max_upload_mb),
        # cache fills: the largest file at 1 MB/s (the upstream client's own minimum-rate
        # rule ends a stalled one well before)
        "fill_timeout": max(600, settings.max_upload_mb * 20),
        "venv": host.venv,
        "wsgi_script": host.wsgi_script,
        "user": host.user,
        "group": host.group,
        "in_vhost": host.in_vhost,
        "pages": settings.pages,
        "state": settings.state,
        "auth_script": host.auth_script,
        "ldap": ldap,
    }


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(share_dir())),
        autoescape=False,  # Apache config, not HTML: values are checked instead
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )


def render_rules(settings: Settings, host: Host, upstream_url: str) -> str:
    return _environment().get_template(TEMPLATE).render(
        **rules_context(settings, host, upstream_url))


def replica_modules(primary_url: str) -> tuple[str, ...]:
    """The modules a replica of ``primary_url`` needs (mod_ssl for an https primary)."""
    return (*REPLICA_MODULES, "ssl") if primary_url.startswith("https://") else REPLICA_MODULES


def replica_context(primary_url: str, cache_root: Path,
                    lock_path: Path | None = None,
                    files_root: Path = DEFAULT_FILES_ROOT,
                    host: Host | None = None, in_vhost: bool = False,
                    ca_file: Path = DEFAULT_CA_FILE) -> dict[str, Any]:
    """A replica serves the primary's URL prefix under the same path on its own host."""
    from .replica import FILE_RE

    host = host or default_host()
    source = Path("the command line")
    primary = check_redirect_url(primary_url, "--replica-of", source)
    prefix = urlsplit(primary).path.rstrip("/")
    if not prefix:
        raise ConfigError(f"--replica-of {primary_url!r}: give the primary's URL with its "
                          "prefix, like http://pypi.example.internal/pypi/")
    return {
        "primary": primary,
        "prefix": prefix,
        "cache_root": check_path(cache_root, "--cache-root", source),
        "lock_path": check_path(lock_path or files_root / ".locks" / "mod_cache",
                                "cache lock path", source),
        "in_vhost": in_vhost,
        "https": primary.startswith("https://"),
        "ca_file": check_path(ca_file, "--ca-file", source),
        "modules": replica_modules(primary),
        "files_root": check_path(files_root, "--files-root", source),
        "file_re": FILE_RE,
        "prefix_re": re.escape(prefix),
        "immutable": IMMUTABLE,
        "venv": check_path(host.venv, "venv", source),
        "wsgi_script": check_path(host.wsgi_script.with_name(REPLICA_SCRIPT), "WSGI script",
                                  source),
        "user": host.user,
        "group": host.group,
        "max_file_size": 16 * 1024**3,
        "connect_timeout": 5,
        # uploads: as long as the primary gives its largest one (never under five minutes)
        "timeout": 600,
        # a GET or HEAD of a file: the longest silence of the primary within its answer
        "read_timeout": 60,
        "max_waiters": 24,
        # after a failed connection, ask the primary again at most every 5 s
        "retry": 5,
    }


def render_replica(primary_url: str, cache_root: Path = DEFAULT_CACHE_ROOT,
                   lock_path: Path | None = None, files_root: Path = DEFAULT_FILES_ROOT,
                   host: Host | None = None, in_vhost: bool = False,
                   ca_file: Path = DEFAULT_CA_FILE) -> str:
    """The drop-in for another machine's Apache: a caching reverse proxy of the primary,
    with its distributions and metadata kept as plain files."""
    context = replica_context(primary_url, cache_root, lock_path, files_root, host,
                              in_vhost, ca_file)
    return _environment().get_template(REPLICA_TEMPLATE).render(**context)
