"""Scan: bring a project's record in line with its folder, validating what is new.

``scan_project`` takes the record kept so far and looks at each entry of the folder: a
file whose size, mtime and ctime are those recorded is taken as it was (not read again);
a new or changed one is validated (name, archive, metadata) and recorded, or goes to
quarantine with a reason; a file gone from disk leaves a tombstone. The repo-level pass
(``projects_to_visit``, ``clean_repo_folder``) quarantines what is not a project folder.
What a scan did goes into a ``Report``. Listings are not written here (``regen``).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from packaging.metadata import RawMetadata

from .archive import inspect_dist
from .errors import InvalidArchive, InvalidFilename, MetadataMismatch
from .names import (
    NormalizedName,
    RepoName,
    canonicalize_name,
    is_normalized_name,
    parse_dist_filename,
    parse_project_name,
)
from .records import SIDECARS, FileRecord, ProjectRecord, Tombstone
from .storage import (
    LISTING_FILES,
    Tree,
    Writer,
    discard,
    is_stale_tmp,
    quarantine,
    read_hashed_stat,
    regular_bytes,
    utc_timestamp,
)

INSPECT_IN_MEMORY = 64 * 1024 * 1024  # a new file up to this size is read from disk once

Parsed = dict[str, RawMetadata]  # a distribution's sha256 -> its core metadata, parsed


@dataclass
class Report:
    """What a regeneration did, for the operator and the exit code."""

    published: list[str] = field(default_factory=list)
    quarantined: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    removed: list[str] = field(default_factory=list)
    listings: int = 0
    projects: int = 0
    upstream_errors: list[str] = field(default_factory=list)  # kept the last good copy
    errors: list[str] = field(default_factory=list)  # entries skipped (permission denied, …)

    @property
    def ok(self) -> bool:
        return not self.quarantined and not self.upstream_errors and not self.errors

    def skipped(self, what: str, exc: BaseException) -> None:
        """One entry could not be processed: say so, and go on with the rest."""
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        self.errors.append(f"{what!r}: {detail}; skipped")


def scan_project(tree: Tree, repo: RepoName, project: NormalizedName, record: ProjectRecord,
                 writer: Writer, report: Report, parsed: Parsed | None = None) -> bool:
    """Bring ``record`` in line with the project folder; return whether it changed.

    New or changed files are validated; invalid ones go to quarantine with a reason.
    Files gone from disk become tombstones: their names are never reused. ``parsed``
    receives the core metadata of each file opened (by its sha256), for the pages.
    """
    folder = tree.project_dir(repo, project)
    files = record.files
    changed = False
    present: set[str] = set()
    metadata_files: list[str] = []
    now = time.time()
    if os.path.islink(folder):  # never followed (the repo pass quarantines it)
        return changed
    undone = [n for n, rec in files.items() if rec.pending]
    for name in undone:
        # a publish that died before it was complete: it was never published; take it back
        writer.remove(folder / name)
        for suffix in (".metadata", *SIDECARS):
            writer.remove(folder / f"{name}{suffix}")
        del files[name]
        report.removed.append(f"{repo}/{project}/{name}")
        changed = True
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        entries = []
    for entry in entries:
        try:
            if _scan_entry(tree, repo, project, record, entry, undone, present,
                           metadata_files, now, writer, report, parsed):
                changed = True
        except (OSError, ValueError) as exc:
            report.skipped(f"{repo}/{project}/{entry.name}", exc)
            if entry.name in files:
                present.add(entry.name)  # not seen properly: not a deletion either
    for name in [n for n in files if n not in present]:
        _tombstone(record, name, "deleted from disk")
        changed = True
    for name in [n for n in metadata_files if n.endswith(SIDECARS)]:
        metadata_files.remove(name)
        if _check_sidecar(tree, repo, folder, files, name, report):
            changed = True
    for name in metadata_files:
        dist_name = name[: -len(".metadata")]
        rec = files.get(dist_name)
        try:
            if rec is None or not rec.metadata_sha256:
                writer.remove(folder / name)  # not one this program wrote
            elif hashlib.sha256(regular_bytes(os.path.join(folder, name))).hexdigest() \
                    != rec.metadata_sha256:
                meta = inspect_dist(folder / dist_name, parse_dist_filename(dist_name))
                writer.write(folder / name, meta.raw)  # a lying .metadata is replaced
                if hashlib.sha256(meta.raw).hexdigest() != rec.metadata_sha256:
                    files[dist_name] = replace(
                        rec, metadata_sha256=hashlib.sha256(meta.raw).hexdigest())
                    changed = True
        except (OSError, ValueError, InvalidFilename, InvalidArchive, MetadataMismatch) as exc:
            report.skipped(f"{repo}/{project}/{name}", exc)
    return changed


def _check_sidecar(tree: Tree, repo: RepoName, folder: Path, files: dict[str, FileRecord],
                   name: str, report: Report) -> bool:
    """A sidecar is kept when its record says this program wrote those bytes; otherwise it
    goes to quarantine (and the record forgets it). Returns whether the record changed."""
    suffix = next(s for s in SIDECARS if name.endswith(s))
    dist_name = name[: -len(suffix)]
    rec = files.get(dist_name)
    expected = rec.sidecar_sha256(suffix) if rec is not None else None
    try:
        if expected and hashlib.sha256(
                regular_bytes(os.path.join(folder, name))).hexdigest() == expected:
            return False
        reject(tree, repo, folder / name, f"{name!r} is not a file this program wrote "
                "beside a distribution (or its bytes changed)", report)
    except OSError as exc:
        report.skipped(f"{repo}/{folder.name}/{name}", exc)
        return False
    if rec is None or expected is None:
        return False
    files[dist_name] = rec.without_sidecar(suffix)
    return True


def _scan_entry(tree: Tree, repo: RepoName, project: NormalizedName, record: ProjectRecord,
                entry: os.DirEntry[str], undone: list[str], present: set[str],
                metadata_files: list[str], now: float, writer: Writer, report: Report,
                parsed: Parsed | None = None) -> bool:
    """One entry of a project folder; returns whether the record changed."""
    files = record.files
    name = entry.name
    if entry.is_symlink():  # never followed, whatever its name
        reject(tree, repo, Path(entry.path), f"{name!r} is a symlink", report)
        return False
    if name.startswith("."):
        if is_stale_tmp(entry, now):
            discard(Path(entry.path))
            report.removed.append(entry.path)
        return False
    if name in LISTING_FILES or name in undone:
        return False
    if name.endswith((".metadata", *SIDECARS)) and entry.is_file(follow_symlinks=False):
        metadata_files.append(name)
        return False
    if not entry.is_file(follow_symlinks=False):
        reject(tree, repo, Path(entry.path), f"{name!r} is not a regular file", report)
        return False
    st = entry.stat(follow_symlinks=False)
    known = files.get(name)
    if known and known.size == st.st_size and known.mtime_ns == st.st_mtime_ns \
            and known.ctime_ns == st.st_ctime_ns:
        present.add(name)
        return False
    path = Path(entry.path)
    try:
        rec = _validate_new_file(tree, repo, project, path, known, record, writer, parsed)
    except (InvalidFilename, InvalidArchive, MetadataMismatch) as exc:
        reject(tree, repo, path, str(exc), report)
        if known:
            _tombstone(record, name, "replaced on disk by other bytes")
            return True
        return False
    files[name] = rec
    present.add(name)
    if not known:
        report.published.append(f"{repo}/{project}/{name}")
    return rec != known


def reject(tree: Tree, repo: RepoName, path: Path, reason: str, report: Report) -> None:
    target = quarantine(tree, repo, path, reason)
    report.quarantined.append((f"{repo}/{path.parent.name}/{path.name}", f"{reason} -> {target}"))


def _tombstone(record: ProjectRecord, name: str, why: str) -> None:
    old = record.files.pop(name)
    record.tombstones[name] = Tombstone(old.sha256, utc_timestamp(), why)


def _validate_new_file(tree: Tree, repo: RepoName, project: NormalizedName, path: Path,
                       known: FileRecord | None, record: ProjectRecord,
                       writer: Writer, parsed: Parsed | None = None) -> FileRecord:
    dist = parse_dist_filename(path.name)
    if dist.project != project:
        raise InvalidFilename(
            f"{path.name!r} belongs to project {dist.project!r}, not in folder {project!r}"
        )
    # read once: hashed, then inspected; its stat as read
    sha256, data, st = read_hashed_stat(path, INSPECT_IN_MEMORY)
    if known:
        if known.sha256 != sha256:
            raise InvalidFilename(f"{path.name!r} was published with other bytes; never replaced")
        return replace(known, size=st.st_size, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns)
    if path.name in record.tombstones:
        raise InvalidFilename(f"{path.name!r} was removed before; a filename is never reused")
    meta = inspect_dist(path, dist, data)
    if parsed is not None:
        parsed[sha256] = meta.fields
    metadata_sha256 = None
    if dist.kind == "wheel":
        writer.write(path.with_name(path.name + ".metadata"), meta.raw)
        metadata_sha256 = hashlib.sha256(meta.raw).hexdigest()
    # when the file entered this repository: its ctime (set by the copy or rename that put
    # it here; scp -p keeps an older mtime, never an older ctime)
    return FileRecord.of_file(st, sha256, str(dist.version), utc_timestamp(st.st_ctime),
                              meta.requires_python, metadata_sha256)


def projects_to_visit(tree: Tree, scan_repos: Sequence[RepoName],
                      render_repos: Sequence[RepoName],
                       names: Sequence[str], report: Report) -> list[NormalizedName]:
    for repo in scan_repos:
        _quarantine_symlinks(tree, repo, report)
    if names:
        return sorted({parse_project_name(n, "argument") for n in names})
    found: set[NormalizedName] = set()
    for repo in render_repos:
        try:
            folders = tree.projects_on_disk(repo)
        except OSError as exc:
            report.skipped(repo, exc)
            folders = []
        for folder in folders:
            if is_normalized_name(folder):
                found.add(NormalizedName(folder))
            elif repo in scan_repos:
                try:
                    _reject_folder(tree, repo, folder, report)
                except OSError as exc:
                    report.skipped(f"{repo}/{folder}", exc)
        records = tree.state / "records" / repo
        if records.is_dir():
            found.update(NormalizedName(p.name[:-5]) for p in records.iterdir()
                         if p.name.endswith(".json") and is_normalized_name(p.name[:-5]))
    return sorted(found)


def _quarantine_symlinks(tree: Tree, repo: RepoName, report: Report) -> None:
    """Symlinks in a repo folder (to a folder or a file) are never followed: quarantined."""
    try:
        with os.scandir(tree.repo_dir(repo)) as it:
            links = [Path(e.path) for e in it if e.is_symlink()]
    except FileNotFoundError:
        return
    except OSError as exc:
        report.skipped(repo, exc)
        return
    for link in links:
        try:
            reject(tree, repo, link, f"{link.name!r} is a symlink; never followed", report)
        except OSError as exc:
            report.skipped(f"{repo}/{link.name}", exc)


def _reject_folder(tree: Tree, repo: RepoName, folder: str, report: Report) -> None:
    """A folder whose name is not a normalized project name: its files go to quarantine."""
    path = tree.repo_dir(repo) / folder
    hint = canonicalize_name(folder) if folder.isprintable() else "a normalized name"
    for entry in os.scandir(path):
        if not entry.name.startswith(".") and (entry.is_file(follow_symlinks=False)
                                               or entry.is_symlink()):
            try:
                reject(tree, repo, Path(entry.path),
                        f"folder {folder!r} is not a normalized project name; use {hint!r}",
                        report)
            except OSError as exc:
                report.skipped(f"{repo}/{folder}/{entry.name}", exc)


def clean_repo_folder(tree: Tree, repo: RepoName, report: Report) -> None:
    """Loose files in a repo folder are not published: they go to quarantine."""
    folder = tree.repo_dir(repo)
    if not folder.is_dir():
        return
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        report.skipped(repo, exc)
        return
    for entry in entries:
        if entry.name.startswith(".") or (entry.name in LISTING_FILES and
                                          entry.is_file(follow_symlinks=False)) \
                or entry.is_dir(follow_symlinks=False):
            continue
        try:
            reject(tree, repo, Path(entry.path),
                    f"files belong in {repo}/<project>/, not in {repo}/", report)
        except OSError as exc:
            report.skipped(f"{repo}/{entry.name}", exc)
