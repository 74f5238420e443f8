"""Who may write where: Apache authenticates, the group file (or, with ``[ldap]``, the
directory, asked by Apache) says who belongs where, the token store what a token may do."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Settings
from .errors import Forbidden, Unauthorized
from .names import NormalizedName, RepoName
from .tokens import REMOTE_PREFIX, TokenStore


def parse_groups(text: str) -> dict[str, frozenset[str]]:
    """Parse an Apache AuthGroupFile: ``group: user user …`` a line, ``#`` comments."""
    groups: dict[str, set[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        name, _, members = line.partition(":")
        groups.setdefault(name.strip(), set()).update(members.split())
    return {g: frozenset(m) for g, m in groups.items()}


class GroupFile:
    """The group file, re-read when it changes on disk; missing means no groups."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._groups: dict[str, frozenset[str]] = {}
        self._lock = threading.Lock()

    def groups(self) -> dict[str, frozenset[str]]:
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            return {}
        with self._lock:
            if stamp != self._stamp:
                self._groups = parse_groups(self.path.read_text(encoding="utf-8", errors="replace"))
                self._stamp = stamp
            return self._groups

    def is_member(self, user: str, groups: Iterable[str]) -> bool:
        known = self.groups()
        return any(user in known.get(g, ()) for g in groups)


# -- who is uploading (issue 16): a person, or a token on a person's behalf ------------------

WRITERS_CHECKED = "PYPI_FALLBACK_WRITERS_CHECKED"  # set by the drop-in where Apache asked LDAP


@dataclass(frozen=True)
class Uploader:
    """Who an upload is from: ``user`` goes into the audit line, with ``token`` (an id)
    when a token was used; ``project`` is the only project the token may upload."""

    user: str
    token: str | None = None
    project: str | None = None

    def check_project(self, project: NormalizedName, repo: RepoName) -> None:
        if self.project is not None and project != self.project:
            raise Forbidden(f"Token {self.token} may upload only {self.project!r} to {repo!r}, "
                            f"not {project!r}")


def authorize_upload(settings: Settings, groups: GroupFile, tokens: TokenStore,
                     environ: Mapping[str, Any], repo_name: RepoName) -> Uploader:
    """Who may upload to ``repo_name``, from REMOTE_USER alone (Apache authenticated it):

    - ``__token__:<id>`` (Apache's token provider accepted the token): the token, read
      again from the same store, must still be usable, be for this repository, and (with
      htpasswd) its owner must still be a writer;
    - with ``[ldap]``, a person: Apache asked the directory for the writer groups in the
      same location that flags the request (``WRITERS_CHECKED``); without that flag (the
      drop-in not included, an old drop-in), nobody;
    - else a person in a writer group of the group file.
    Anything else is refused (fail closed)."""
    user = environ.get("REMOTE_USER")
    if not user:
        raise Unauthorized("Authentication required to upload")
    repo = settings.repos[repo_name]
    allowed = ", ".join(repo.writers) or "none"
    if user.startswith(REMOTE_PREFIX):
        try:
            token = tokens.get(user[len(REMOTE_PREFIX):])
        except (ValueError, TypeError):  # a damaged store: no token is usable
            token = None
        if token is None:
            raise Unauthorized("This token was revoked or has expired")
        if token.repo != repo_name:
            raise Forbidden(f"Token {token.id} may upload only to {token.repo!r}, "
                            f"not to {repo_name!r}")
        if settings.ldap is None and not groups.is_member(token.owner, repo.writers):
            raise Forbidden(f"Token {token.id}: its owner {token.owner!r} may no longer upload "
                            f"to {repo_name!r}: only members of the groups {allowed} may")
        return Uploader(token.owner, token.id, token.project)
    if ":" in user:
        raise Forbidden(f"User {user!r} is not a user name")
    if settings.ldap is not None:
        if environ.get(WRITERS_CHECKED) != repo_name:
            raise Forbidden(f"User {user!r} may not upload to {repo_name!r}: the directory's "
                            "groups were not checked for this request (is the drop-in "
                            "included?)")
        return Uploader(user)
    if not groups.is_member(user, repo.writers):
        raise Forbidden(f"User {user!r} may not upload to {repo_name!r}: only members of "
                        f"the groups {allowed} may")
    return Uploader(user)
