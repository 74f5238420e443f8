"""Stamps: how a full ``regen-index`` skips, without reading or rendering anything, a
project in which nothing changed since it last brought it up to date.

A project's stamp is the identity (``lstat``: type, inode, size, mtime, ctime) of everything
a regeneration reads or writes for it: its folder in each repository and every entry there
(distributions, the files kept beside them, the listing files), its record in each
repository, its page for people and what that page is made of (its state, its audit trail,
the upstream's listing), and its claim; plus the run's constants: the configuration, this
program's own files and the shared type map. A file written again, by any program, has a
new ctime (and, replaced by a rename, a new inode), so an unchanged stamp means that the
run would write the same bytes. A public project (an overlay, or one with pinned files:
its listings merge upstream files, which age in) is never stamped; neither is one whose run
skipped something.

``<state>/regen-stamps.json`` keeps the stamps of the last full run. It is derived: written
without fsync, and a missing or damaged file only means that the next run checks every
project the long way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from .config import Settings
from .names import NormalizedName
from .storage import PAGES_DIR, UPSTREAM_DIR, Tree, Volatile

VERSION = "1"  # bumped when what a stamp covers changes
FILE = "regen-stamps.json"


def _ident(st: os.stat_result) -> str:
    return f"{st.st_mode:o}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def _shared(st: os.stat_result) -> str:
    """The shared type map (``index.var``, one file linked into every listing folder):
    which file it is; its ctime changes whenever a folder is linked to it."""
    return f"{st.st_mode:o}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def run_constants(settings: Settings, tree: Tree) -> str:
    """What every stamp of a run shares: the configuration, this program's files (an
    upgrade renders differently) and the shared type map of the listings."""
    h = hashlib.sha256(f"{VERSION}\n{settings!r}\n".encode())
    package = os.path.dirname(os.path.abspath(__file__))
    for folder in (package, os.path.join(package, "templates")):
        with os.scandir(folder) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.is_file() and entry.name.endswith((".py", ".html", ".css", ".js")):
                    h.update(f"{entry.name}:{_ident(entry.stat())}\n".encode())
    with contextlib.suppress(OSError):
        h.update(_shared(os.lstat(os.path.join(tree.root, ".index.var"))).encode())
    return h.hexdigest()


def project_stamp(settings: Settings, tree: Tree, project: NormalizedName,
                  claim: str | None) -> str:
    """The stamp of ``project`` as it is on disk now (see the module's docstring; the run's
    constants are kept once, beside the stamps). Plain system calls and tuples: the next
    run computes one for every project, and that is most of what it costs."""
    root, state = os.fspath(tree.root), os.fspath(tree.state)
    found: list[object] = [claim]
    paths = [f"{state}/records/{repo}/{project}.json" for repo in settings.repos]
    paths += [f"{root}/{PAGES_DIR}/{project}/index.html",
              f"{state}/pages/projects/{project}.json",
              f"{state}/pages/trails/{project}.json",
              f"{state}/upstream/{project}.json"]
    if settings.fallback_mode == "cache":
        paths.append(f"{root}/{UPSTREAM_DIR}/{project}")
    lstat = os.lstat
    for path in paths:
        try:
            st = lstat(path)
        except OSError:  # missing (or unreadable: then the long way finds out)
            found.append(None)
            continue
        found.append((st.st_mode, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    for repo in settings.repos:
        try:
            with os.scandir(f"{root}/{repo}/{project}") as it:
                entries = sorted((e.name, e.stat(follow_symlinks=False)) for e in it)
        except OSError:
            found.append(None)
            continue
        for name, st in entries:
            # the shared type map's ctime changes whenever a folder is linked to it
            found.append((name, st.st_mode, st.st_ino, st.st_size, st.st_mtime_ns,
                          None if name == "index.var" else st.st_ctime_ns))
    return hashlib.sha256(repr(found).encode()).hexdigest()


def load_stamps(tree: Tree, constants: str) -> dict[str, str]:
    """The stamps of the last full run, if it ran with the same constants."""
    try:
        data = json.loads((tree.state / FILE).read_bytes())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("constants") != constants or \
            not isinstance(data.get("projects"), dict):
        return {}
    return {k: v for k, v in data["projects"].items() if isinstance(v, str)}


def save_stamps(tree: Tree, constants: str, stamps: Mapping[str, str],
                projects: Iterable[str]) -> None:
    """Keep the stamps of ``projects`` (the run's) for the next full run, with the
    ``constants`` as the run leaves them."""
    kept = {p: stamps[p] for p in projects if p in stamps}
    body = json.dumps({"constants": constants, "projects": kept}, sort_keys=True,
                      separators=(",", ":")).encode()
    Volatile().write(Path(tree.state) / FILE, body)
