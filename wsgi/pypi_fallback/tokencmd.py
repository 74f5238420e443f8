"""The ``token`` command's work: create, list and revoke upload tokens in the store.

Every change rewrites the store under a lock (temporary file, fsync, rename), so Apache's
token provider and the app see the old store or the new one, and a revocation takes
effect on the next request. Creating and revoking a token is audited.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from .auth import GroupFile
from .config import Settings
from .errors import TokenRefused
from .names import RepoName, parse_normalized_name
from .records import AuditEntry
from .storage import Tree, Writer, append_audit, locked, utc_timestamp
from .tokens import Token, new_token, parse_store, render_store, revoked, store_path


@dataclass(frozen=True)
class Created:
    token: Token
    text: str  # shown once, stored nowhere


def _load(settings: Settings) -> dict[str, Token]:
    path = store_path(settings.state)
    try:
        return parse_store(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (ValueError, TypeError) as exc:
        raise TokenRefused(f"{path}: the token store is damaged ({exc}); every token is "
                           "refused until it is restored from a backup") from None


def _save(settings: Settings, tokens: dict[str, Token]) -> None:
    Writer().write(store_path(settings.state), render_store(tokens.values()))


def create_token(settings: Settings, owner: str, repo: RepoName, project: str | None,
                 lifetime: int | None, operator: str, now: float | None = None) -> Created:
    """A token for ``owner`` to upload to ``repo`` (only ``project``, if given). With the
    group file, ``owner`` must be one of the repo's writers (checked again at every use)."""
    if repo not in settings.repos:
        raise TokenRefused(f"No such repository: {repo!r} (known: {', '.join(settings.repos)})")
    if not owner or ":" in owner or owner.strip() != owner or owner == "__token__":
        raise TokenRefused(f"Not a user name: {owner!r}")
    if project is not None:
        project = parse_normalized_name(project, "--project")
    writers = settings.repos[repo].writers
    if settings.ldap is None and not GroupFile(settings.htgroups).is_member(owner, writers):
        raise TokenRefused(f"User {owner!r} may not upload to {repo!r} (only members of the "
                           f"groups {', '.join(writers) or 'none'} may), so no token for it")
    now = time.time() if now is None else now
    tree = Tree.of(settings)
    with locked(tree, "+tokens"):
        tokens = _load(settings)
        token, text = new_token(owner, repo, project, lifetime, now)
        tokens[token.id] = token
        _save(settings, tokens)
        append_audit(tree, AuditEntry(utc_timestamp(), operator, "token-create", {
            "token": token.id, "owner": owner, "repo": repo, "project": project,
            "expires": token.expires}))
    return Created(token, text)


def list_tokens(settings: Settings) -> Iterator[Token]:
    yield from sorted(_load(settings).values(), key=lambda t: (t.created, t.id))


def revoke_token(settings: Settings, token_id: str, operator: str,
                 now: float | None = None) -> Token:
    now = time.time() if now is None else now
    tree = Tree.of(settings)
    with locked(tree, "+tokens"):
        tokens = _load(settings)
        if token_id not in tokens:
            raise TokenRefused(f"No such token: {token_id!r} (see: token list)")
        token = tokens[token_id] = revoked(tokens[token_id], now)
        _save(settings, tokens)
        append_audit(tree, AuditEntry(utc_timestamp(), operator, "token-revoke", {
            "token": token_id, "owner": token.owner, "repo": token.repo}))
    return token


def describe(token: Token, now: float) -> str:
    expires = (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(token.expires))
               if token.expires is not None else "never")
    return (f"{token.id}  {token.state(now):<8} {token.owner:<12} {token.repo}/"
            f"{token.project or '*'}  expires {expires}")
