"""Upload tokens for CI: made by ``token create``, checked by Apache, scoped by the app.

A token is ``pft_<id>_<secret>``; the store (``<state>/tokens.json``) keeps its id, owner,
repository, project, expiry and the SHA-256 of the secret (the secret is 256 random bits,
so a fast hash is as safe as a slow one and keeps every upload cheap). Apache
authenticates a token through mod_wsgi's ``WSGIAuthUserScript`` (``wsgi/pypi_fallback_auth
.wsgi`` calls ``check_password`` below), which names the request's user
``__token__:<id>``: a colon is in no htpasswd or Basic-auth user name, so no password can
pose as a token. The app then reads the same store for the token's owner and scope. This
module imports the standard library only: it runs inside Apache's own processes too, where
the config's modules are loaded only by a request that sends a token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .errors import TokenError

TOKEN_USER = "__token__"  # the user name twine and uv publish send with a token
REMOTE_PREFIX = TOKEN_USER + ":"  # REMOTE_USER of a request authenticated by a token
STORE_NAME = "tokens.json"
AUTH_GROUP = "pypi-fallback-auth"  # mod_wsgi application group of the token provider
_TOKEN = re.compile(r"^pft_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_DURATION = re.compile(r"^([1-9][0-9]{0,6})([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Token:
    id: str
    owner: str
    repo: str
    project: str | None  # None: any project of the repository
    created: float
    expires: float | None  # None: never
    sha256: str
    revoked: float | None = None

    def usable(self, now: float) -> bool:
        return self.revoked is None and (self.expires is None or now < self.expires)

    def state(self, now: float) -> str:
        if self.revoked is not None:
            return "revoked"
        if self.expires is not None and now >= self.expires:
            return "expired"
        return "active"


def parse_duration(text: str) -> int:
    """``30d``, ``12h``, ``15m``, ``90s`` in seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise TokenError(f"--expires {text!r}: use a number and a unit, like 30d, 12h, 15m or 90s")
    return int(match.group(1)) * _UNITS[match.group(2)]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_token(text: str) -> tuple[str, str] | None:
    """The id and secret of a well-formed token, else None."""
    match = _TOKEN.match(text)
    return (match.group(1), match.group(2)) if match else None


def store_path(state: Path) -> Path:
    return state / STORE_NAME


def parse_store(data: bytes) -> dict[str, Token]:
    if not data.strip():
        return {}
    body = json.loads(data)
    tokens = {}
    for entry in body.get("tokens", []):
        token = Token(**entry)
        tokens[token.id] = token
    return tokens


def render_store(tokens: Iterable[Token]) -> bytes:
    entries = [asdict(t) for t in sorted(tokens, key=lambda t: (t.created, t.id))]
    return (json.dumps({"tokens": entries}, indent=1, sort_keys=True) + "\n").encode()


def new_token(owner: str, repo: str, project: str | None, lifetime: int | None,
              now: float) -> tuple[Token, str]:
    """A new token record and the token text (shown once, never stored)."""
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    record = Token(id=token_id, owner=owner, repo=repo, project=project, created=now,
                   expires=now + lifetime if lifetime else None, sha256=_digest(secret))
    return record, f"pft_{token_id}_{secret}"


def revoked(token: Token, now: float) -> Token:
    return token if token.revoked is not None else replace(token, revoked=now)


def verify(tokens: dict[str, Token], text: str, now: float) -> Token | None:
    """The token ``text`` stands for, if it is known, unrevoked, unexpired and its secret
    matches; else None."""
    parts = split_token(text)
    if parts is None:
        return None
    token = tokens.get(parts[0])
    if token is None or not token.usable(now):
        return None
    if not hmac.compare_digest(token.sha256, _digest(parts[1])):
        return None
    return token


class TokenStore:
    """The store as this process last read it, read again whenever the file changes (a
    revocation is a new file, renamed into place: the next request sees it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._tokens: dict[str, Token] = {}
        self._lock = threading.Lock()

    def tokens(self) -> dict[str, Token]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {}
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._tokens = parse_store(self.path.read_bytes())
                self._stamp = stamp
            return self._tokens

    def get(self, token_id: str, now: float | None = None) -> Token | None:
        """The token with this id if it may be used now (fail closed: else None)."""
        token = self.tokens().get(token_id)
        now = time.time() if now is None else now
        return token if token is not None and token.usable(now) else None


# -- the Apache side: mod_wsgi's authentication provider --------------------------------------

@dataclass(frozen=True)
class _Deployment:
    """What the provider knows of the deployment that named it: the token store, and
    whether a token's owner is still a writer of its repository."""
    store: TokenStore
    owner_may_write: Callable[[Token], bool]


_deployments: dict[str, tuple[tuple[int, int] | None, _Deployment]] = {}
_deployments_lock = threading.Lock()


def _deployment_of(environ: dict[str, Any]) -> _Deployment | None:
    """The deployment the drop-in named in the provider's interpreter name
    (``application-group=pypi-fallback-auth:<config file>``; mod_wsgi gives an auth
    provider no request variables): its config, read again when it changes. A state
    folder in that place (a drop-in written by an older version) gives its store, with no
    check of the owner. Nothing usable (unreadable or broken config): None, and no token
    is accepted."""
    kind, _, name = str(environ.get("mod_wsgi.application_group", "")).partition(":")
    if kind != AUTH_GROUP or not name.startswith("/"):
        return None
    try:
        st = os.stat(name)
    except OSError:
        return None
    key = None if os.path.isdir(name) else (st.st_mtime_ns, st.st_size)
    with _deployments_lock:
        known = _deployments.get(name)
        if known is not None and known[0] == key:
            return known[1]
        if key is None:
            found = _Deployment(TokenStore(store_path(Path(name))), lambda token: True)
        else:
            made = _deployment_from_config(name)
            if made is None:
                return None
            found = made
        _deployments[name] = (key, found)
        return found


def _deployment_from_config(path: str) -> _Deployment | None:
    # imported here: only a request that sends a token loads the config's modules
    from .auth import GroupFile
    from .config import load_settings
    from .errors import ConfigError
    from .names import RepoName

    try:
        settings = load_settings(path, check_paths=False)
    except (ConfigError, OSError):
        return None
    if settings.ldap is not None:
        # the token commands do not ask the directory: revoking stops a token (README)
        return _Deployment(TokenStore(store_path(settings.state)), lambda token: True)
    groups = GroupFile(settings.htgroups)

    def owner_may_write(token: Token) -> bool:
        repo = settings.repos.get(RepoName(token.repo))
        return repo is not None and groups.is_member(token.owner, repo.writers)

    return _Deployment(TokenStore(store_path(settings.state)), owner_may_write)


def check_password(environ: dict[str, Any], user: str, password: str) -> bool | str | None:
    """mod_wsgi's Basic auth provider: None for anyone but ``__token__`` (the next provider,
    htpasswd or LDAP, decides), False for a bad, revoked or expired token, else the user
    name ``__token__:<id>`` (an upload is then refused by the app, with its reason, if the
    owner is no longer a writer; a read by ``groups_for_user``). Without a deployment (see
    ``_deployment_of``) nothing is accepted."""
    if user != TOKEN_USER:
        return None
    deployment = _deployment_of(environ)
    if deployment is None:
        return False
    try:
        token = verify(deployment.store.tokens(), password, time.time())
    except (OSError, ValueError, TypeError):
        return False
    return REMOTE_PREFIX + token.id if token else False


TOKEN_GROUP = "pypi-fallback-token"  # Require wsgi-group pypi-fallback-token:<repo>


def groups_for_user(environ: dict[str, Any], user: str) -> list[str]:
    """mod_wsgi's group provider (``Require wsgi-group``): a user this provider named
    (``__token__:<id>``) is in the group ``pypi-fallback-token:<repo>`` of its token's
    repository while the token is usable and its owner still a writer there; nobody else
    is in any. (``Require expr`` on REMOTE_USER cannot do this: when false it answers "no
    user yet", and Apache then asks for a password again instead of refusing.)"""
    deployment = _deployment_of(environ)
    if not user.startswith(REMOTE_PREFIX) or deployment is None:
        return []
    try:
        token = deployment.store.get(user[len(REMOTE_PREFIX):])
    except (OSError, ValueError, TypeError):
        return []
    if token is None or not deployment.owner_may_write(token):
        return []
    return [f"{TOKEN_GROUP}:{token.repo}"]
