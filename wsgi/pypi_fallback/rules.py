"""The Apache drop-in, rendered from the config by a template kept in ``apache/``.

``render_rules`` is pure: settings and a few facts about the host in, text out.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from .config import Settings
from .errors import ConfigError
from .storage import UPSTREAM_DIR

TEMPLATE = "pypi-fallback.conf.j2"
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
    if not _SAFE_URL.match(url):
        raise ConfigError(
            f"{source}: {key} {url!r} cannot be used in a redirect rule: use a plain "
            "http(s)://host[:port]/path URL"
        )
    return url if url.endswith("/") else url + "/"


_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/+@-]*$")


def check_path(path: Path, key: str, source: Path) -> Path:
    """A path going into the drop-in: nothing Apache or mod_rewrite would interpret."""
    if not _SAFE_PATH.match(str(path)):
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
        })
    cache = settings.fallback_mode == "cache"
    limit = settings.max_request_bytes
    return {
        "source": settings.source,
        "prefix": settings.url_prefix,
        "prefix_re": re.escape(settings.url_prefix),
        "root": settings.root,
        "htpasswd": settings.htpasswd,
        "htgroups": settings.htgroups,
        "claims_map": settings.state / "claims.map",
        "repos": repos,
        "repo_alternation": "|".join(re.escape(r) for r in settings.repos),
        "private_re": "|".join(glob_to_regex(p) for p in settings.private),
        "upstream_target": f"{settings.url_prefix}/+upstream/" if cache else
        check_redirect_url(upstream_url, "upstream.url", settings.source),
        "cache_mode": cache,
        "served_alternation": "|".join([re.escape(r) for r in settings.repos]
                                       + ([re.escape(UPSTREAM_DIR)] if cache else [])),
        "limit_request_body": min(limit, 2**31 - 1),
        # long enough for the largest upload at ~1 MB/s, and never under five minutes
        "request_timeout": max(300, settings.max_upload_mb),
        "venv": host.venv,
        "wsgi_script": host.wsgi_script,
        "user": host.user,
        "group": host.group,
        "in_vhost": host.in_vhost,
        "state": settings.state,
        "auth_script": host.auth_script,
        "ldap": ldap,
    }


def render_rules(settings: Settings, host: Host, upstream_url: str) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(share_dir())),
        autoescape=False,  # Apache config, not HTML: values are checked instead
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template(TEMPLATE).render(**rules_context(settings, host, upstream_url))
