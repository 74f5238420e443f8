"""Who may write where: Apache authenticates, the group file says who belongs where."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path


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
