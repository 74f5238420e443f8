"""Regeneration: from the files on disk to published listings.

``scan_project`` validates what is in a project folder (files copied in with scp
included) and keeps its record; ``render_project`` writes the listings of a
project for every repo that shows it. Uploads and ``regen-index`` share both,
under the same per-project lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import mirror
from .archive import inspect_dist
from .config import Settings
from .errors import InvalidArchive, InvalidFilename, MetadataMismatch
from .listing import (
    TYPE_MAP,
    ProjectStatus,
    build_project_page,
    build_root_page,
    merge_files,
    render_json,
    render_project_html,
    render_root_html,
)
from .names import (
    NormalizedName,
    canonicalize_name,
    is_normalized_name,
    parse_dist_filename,
    parse_project_name,
)
from .pages import refresh as refresh_pages
from .policywatch import record_policy
from .records import SIDECARS, FileEntry, FileRecord, ProjectRecord, Tombstone
from .storage import (
    LISTING_FILES,
    UPSTREAM_DIR,
    Batch,
    Tree,
    Writer,
    add_claims,
    discard,
    is_stale_tmp,
    load_record,
    locked,
    quarantine,
    regular_bytes,
    sha256_file,
    utc_timestamp,
    write_listing,
)
from .upstream import UpstreamError

Records = dict[tuple[str, str], ProjectRecord]


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


def file_record(path: Path, sha256: str, version: str, requires_python: str | None,
                metadata_sha256: str | None, upload_time: str) -> FileRecord:
    st = path.stat()
    return FileRecord(sha256=sha256, size=st.st_size, version=version, upload_time=upload_time,
                      requires_python=requires_python, metadata_sha256=metadata_sha256,
                      mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns)


def scan_project(tree: Tree, repo: str, project: NormalizedName, record: ProjectRecord,
                 writer: Writer, report: Report) -> bool:
    """Bring ``record`` in line with the project folder; return whether it changed.

    New or changed files are validated; invalid ones go to quarantine with a reason.
    Files gone from disk become tombstones: their names are never reused.
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
                           metadata_files, now, writer, report):
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


def _check_sidecar(tree: Tree, repo: str, folder: Path, files: dict[str, FileRecord], name: str,
                   report: Report) -> bool:
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
        _reject(tree, repo, folder / name, f"{name!r} is not a file this program wrote "
                "beside a distribution (or its bytes changed)", report)
    except OSError as exc:
        report.skipped(f"{repo}/{folder.name}/{name}", exc)
        return False
    if rec is None or expected is None:
        return False
    files[dist_name] = rec.without_sidecar(suffix)
    return True


def _scan_entry(tree: Tree, repo: str, project: NormalizedName, record: ProjectRecord,
                entry: os.DirEntry[str], undone: list[str], present: set[str],
                metadata_files: list[str], now: float, writer: Writer, report: Report
                ) -> bool:
    """One entry of a project folder; returns whether the record changed."""
    files = record.files
    name = entry.name
    if entry.is_symlink():  # never followed, whatever its name
        _reject(tree, repo, Path(entry.path), f"{name!r} is a symlink", report)
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
        _reject(tree, repo, Path(entry.path), f"{name!r} is not a regular file", report)
        return False
    st = entry.stat(follow_symlinks=False)
    known = files.get(name)
    if known and known.size == st.st_size and known.mtime_ns == st.st_mtime_ns \
            and known.ctime_ns == st.st_ctime_ns:
        present.add(name)
        return False
    path = Path(entry.path)
    try:
        rec = _validate_new_file(tree, repo, project, path, known, record, writer)
    except (InvalidFilename, InvalidArchive, MetadataMismatch) as exc:
        _reject(tree, repo, path, str(exc), report)
        if known:
            _tombstone(record, name, "replaced on disk by other bytes")
            return True
        return False
    files[name] = rec
    present.add(name)
    if not known:
        report.published.append(f"{repo}/{project}/{name}")
    return rec != known


def _reject(tree: Tree, repo: str, path: Path, reason: str, report: Report) -> None:
    target = quarantine(tree, repo, path, reason)
    report.quarantined.append((f"{repo}/{path.parent.name}/{path.name}", f"{reason} -> {target}"))


def _tombstone(record: ProjectRecord, name: str, why: str) -> None:
    old = record.files.pop(name)
    record.tombstones[name] = Tombstone(old.sha256, utc_timestamp(), why)


def _validate_new_file(tree: Tree, repo: str, project: NormalizedName, path: Path,
                       known: FileRecord | None, record: ProjectRecord,
                       writer: Writer) -> FileRecord:
    dist = parse_dist_filename(path.name)
    if dist.project != project:
        raise InvalidFilename(
            f"{path.name!r} belongs to project {dist.project!r}, not in folder {project!r}"
        )
    sha256 = sha256_file(path)
    if known:
        if known.sha256 != sha256:
            raise InvalidFilename(f"{path.name!r} was published with other bytes; never replaced")
        st = path.stat()
        return replace(known, size=st.st_size, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns)
    if path.name in record.tombstones:
        raise InvalidFilename(f"{path.name!r} was removed before; a filename is never reused")
    meta = inspect_dist(path, dist)
    metadata_sha256 = None
    if dist.kind == "wheel":
        writer.write(path.with_name(path.name + ".metadata"), meta.raw)
        metadata_sha256 = hashlib.sha256(meta.raw).hexdigest()
    # when the file entered this repository: its ctime (set by the copy or rename that put
    # it here; scp -p keeps an older mtime, never an older ctime)
    upload_time = utc_timestamp(path.stat().st_ctime)
    return file_record(path, sha256, str(dist.version), meta.requires_python,
                       metadata_sha256, upload_time)


def file_url(viewer: str, holder: str, project: str, filename: str) -> str:
    """A link relative to ``<prefix>/<viewer>/<project>/`` to a file held by ``holder``."""
    return filename if viewer == holder else f"../../{holder}/{project}/{filename}"


def render_project(settings: Settings, tree: Tree, project: NormalizedName,
                   repos: Iterable[str], records: Records, writer: Writer,
                   report: Report, dirty: set[str] | None = None) -> set[str]:
    """Write the listings of ``project`` in each of ``repos``; return the repos whose
    set of projects changed (the project appeared or disappeared there).

    A record that changes (it keeps its listing's fingerprint) is written at once, or,
    when ``dirty`` is given, noted there for the caller to write once."""
    roots_changed: set[str] = set()
    for repo in repos:
        record = _record(tree, repo, project, records)
        folder = tree.project_dir(repo, project)
        if not record.files:
            if (folder / "index.v1_json").exists():
                for name in LISTING_FILES:
                    writer.remove(folder / name)
                roots_changed.add(repo)
            if record.listing is not None:
                record.listing = None
                _changed(tree, repo, project, record, writer, dirty)
            continue
        layers = []
        for holder in settings.chain(repo):
            files = _record(tree, holder, project, records).published()
            layers.append([FileEntry.from_record(n, r, file_url(repo, holder, project, n))
                           for n, r in files.items()])
        tracked: list[str] = []
        admitted = mirror.Admitted()
        if settings.reaches_upstream(repo) and is_public(settings, project, [
                _record(tree, holder, project, records) for holder in settings.chain(repo)]):
            admitted = mirror.admitted_upstream(settings, project)
            layers.append(admitted.entries)
            tracked = mirror.tracks(settings, project)
        status = local_status(settings.chain(repo), project, records, tree) or admitted.status
        page = build_project_page(project, merge_files(layers), tracked, status)
        body = render_json(page)
        fingerprint = hashlib.sha256(body).hexdigest()
        if os.path.islink(folder):  # never written through (the repo pass quarantines it)
            continue
        listed = os.path.exists(os.path.join(folder, "index.v1_json"))
        if record.listing == fingerprint and listed and \
                listing_intact(settings.root, folder, body, record.listing_html):
            continue
        if not listed:
            roots_changed.add(repo)
        html = render_project_html(page)
        for name in LISTING_FILES:  # what this program did not write goes, links included
            path = folder / name
            if os.path.islink(path) or (path.exists() and not path.is_file()):
                _reject(tree, repo, path, f"{name!r} is not a listing this program wrote",
                        report)
        write_listing(writer, settings.root, folder, body, html, TYPE_MAP)
        record.listing = fingerprint
        record.listing_html = hashlib.sha256(html).hexdigest()
        _changed(tree, repo, project, record, writer, dirty)
        report.listings += 1
        if admitted.exceptions and page["files"]:
            mirror.audit_exceptions(settings, repo, project, admitted.exceptions)
    return roots_changed


def local_status(chain: Iterable[str], project: NormalizedName, records: Records,
                 tree: Tree) -> ProjectStatus | None:
    """PEP 792: the status set with ``status`` in the nearest repo of ``chain`` that has
    one (None: none set, which means active)."""
    for holder in chain:
        state = _record(tree, holder, project, records).status
        if state is not None:
            return ProjectStatus(state.status, state.reason)
    return None


def listing_intact(root: Path, folder: Path, body: bytes, html_sha256: str | None) -> bool:
    """The listing files on disk are the ones this program wrote: ``index.v1_json`` has the
    bytes it would write, ``index.html`` the hash recorded, ``index.var`` is the shared
    type map (a hard link), and none is a symlink."""
    base = os.fspath(folder)
    try:
        var = os.lstat(base + "/index.var")
        if not stat.S_ISREG(var.st_mode) or var.st_ino != os.lstat(
                os.fspath(root) + "/.index.var").st_ino:
            return False
        return html_sha256 is not None and regular_bytes(base + "/index.v1_json") == body \
            and hashlib.sha256(regular_bytes(base + "/index.html")).hexdigest() == html_sha256
    except OSError:
        return False


def _changed(tree: Tree, repo: str, project: NormalizedName, record: ProjectRecord,
             writer: Writer, dirty: set[str] | None) -> None:
    if dirty is None:
        writer.write(tree.record_path(repo, project), record.dump())
    else:
        dirty.add(repo)


def is_public(settings: Settings, project: str, records: Iterable[ProjectRecord]) -> bool:
    """A public project published here: an overlay, or one with pinned upstream files.
    Its listings merge the upstream's files; it is never claimed."""
    return settings.is_overlay(project) or any(
        rec.pinned for record in records for rec in record.files.values())


def _record(tree: Tree, repo: str, project: NormalizedName, records: Records) -> ProjectRecord:
    key = (repo, project)
    if key not in records:
        records[key] = load_record(tree, repo, project)
    return records[key]


def render_root(settings: Settings, tree: Tree, repo: str, writer: Writer) -> bool:
    """Rewrite a repo's root listing if its set of projects changed."""
    names: set[str] = set()
    for holder in settings.chain(repo):
        base = str(tree.repo_dir(holder))
        names.update(p for p in tree.projects_on_disk(holder)
                     if os.path.exists(os.path.join(base, p, "index.v1_json")))
    page = build_root_page(names)
    body = render_json(page)
    folder = tree.repo_dir(repo)
    try:
        if (folder / "index.v1_json").read_bytes() == body:
            return False
    except FileNotFoundError:
        pass
    write_listing(writer, settings.root, folder, body, render_root_html(page), TYPE_MAP)
    return True


def refresh_roots(settings: Settings, repos: Iterable[str]) -> None:
    """Bring the root listings of ``repos`` up to date, each under its own lock."""
    tree = Tree.of(settings)
    for repo in repos:
        with locked(tree, f"+root-{repo}"):
            render_root(settings, tree, repo, Writer())


Progress = Callable[[int, int], None]


def regenerate(settings: Settings, repos: Sequence[str] | None = None,
               names: Sequence[str] = (), progress: Progress | None = None,
               batch_size: int = 200, refresh_upstream: bool = False) -> Report:
    """Rebuild listings from disk: the whole of ``repos`` (all by default), or only ``names``.

    With ``refresh_upstream``, cached upstream listings older than ``upstream.ttl`` are
    fetched again first (a failure keeps the last good copy and is reported)."""
    tree = Tree.of(settings)
    report = Report()
    refreshed: set[NormalizedName] = set()
    if refresh_upstream:
        refreshed = refresh_upstream_listings(settings, names, report)
        report.upstream_errors += mirror.recheck_claims(settings, mirror.make_upstream(settings))
    scan_repos = list(repos or settings.repos)
    render_repos: list[str] = []
    for repo in scan_repos:
        render_repos += [r for r in settings.dependents(repo) if r not in render_repos]
    projects = _projects_to_visit(tree, scan_repos, render_repos, names, report)
    if refresh_upstream:
        projects = sorted(set(projects) | {p for p in refreshed if not names or p in names})
    for project in projects:
        if settings.is_overlay(project) and mirror.load_listing(tree, project) is None:
            refresh_upstream_listings(settings, [project], report, force=True)
    roots: set[str] = set()
    held: set[NormalizedName] = set()
    for start in range(0, len(projects), batch_size):
        chunk = projects[start:start + batch_size]
        writer = Batch(settings.root)
        with contextlib.ExitStack() as stack:
            for project in chunk:
                stack.enter_context(locked(tree, project))
                try:
                    _regenerate_project(settings, tree, project, scan_repos, render_repos,
                                        writer, report, roots, held)
                except (OSError, ValueError) as exc:  # one bad project: the rest goes on
                    report.skipped(project, exc)
            try:
                writer.flush()
            except OSError as exc:
                report.skipped(f"{chunk[0]}…{chunk[-1]}", exc)
        report.projects += len(chunk)
        if progress:
            progress(start + len(chunk), len(projects))
    if not names:  # files age in, the policy may have changed: the cache-mode pages too
        rerender_upstream_pages(settings, report)
        with contextlib.suppress(OSError):
            record_policy(settings)  # the listings follow this policy now
    try:
        refresh_roots(settings, render_repos if not names else settings.viewers(roots))
    except OSError as exc:
        report.skipped("root listings", exc)
    add_claims(tree, {p: "published" for p in held})
    for repo in scan_repos:
        _clean_repo_folder(tree, repo, report)
    refresh_pages(settings, projects if names else None)  # pages for people (pages.py)
    write_status(tree, report)
    return report


def _regenerate_project(settings: Settings, tree: Tree, project: NormalizedName,
                        scan_repos: Sequence[str], render_repos: Sequence[str], writer: Batch,
                        report: Report, roots: set[str], held: set[NormalizedName]) -> None:
    records: Records = {}
    dirty: set[str] = set()
    for repo in scan_repos:
        record = _record(tree, repo, project, records)
        if scan_project(tree, repo, project, record, writer, report):
            dirty.add(repo)
    roots |= render_project(settings, tree, project, render_repos, records, writer, report,
                            dirty)
    for repo in dirty:
        writer.write(tree.record_path(repo, project), records[(repo, project)].dump())
    if any(rec.files for rec in records.values()) and \
            not is_public(settings, project, records.values()):
        held.add(project)


def refresh_upstream_listings(settings: Settings, names: Sequence[str], report: Report,
                              force: bool = False) -> set[NormalizedName]:
    """Fetch again the cached upstream listings that are stale (all of ``names`` when
    forced); rewrite the cache-mode pages under ``+upstream``. Returns what changed."""
    tree = Tree.of(settings)
    folder = tree.state / "upstream"
    if names:
        wanted = sorted({parse_project_name(n, "argument") for n in names})
    else:
        wanted = sorted(NormalizedName(p.name[:-5]) for p in folder.glob("*.json")) \
            if folder.is_dir() else []
    upstream = mirror.make_upstream(settings)
    changed: set[NormalizedName] = set()
    for project in wanted:
        cached = mirror.load_listing(tree, project)
        if mirror.is_claimed(settings, project) or (
                not force and (cached is None or mirror.is_fresh(settings, cached))):
            continue
        try:
            listing = upstream.fetch_listing(project, cached)
        except UpstreamError as exc:
            report.upstream_errors.append(f"{project}: {exc} (kept the copy of "
                                          f"{utc_timestamp(cached.fetched) if cached else 'none'})")
            continue
        if cached is not None and not listing.found and cached.found:
            report.upstream_errors.append(f"{project}: upstream now answers 404; kept the last "
                                          "listing")
            continue
        mirror.store_listing(tree, listing)
        if cached is None or cached.files != listing.files:
            changed.add(project)
            render_upstream_page(settings, project, Writer())
    return changed


def render_upstream_page(settings: Settings, project: NormalizedName, writer: Writer) -> bool:
    """Cache mode: the listing under ``+upstream`` Apache serves for a project no local repo
    holds, with links through this server, the files the release-age policy admits now and
    what the upstream says of the project (PEP 708, 792). Returns whether it was (re)written:
    an unchanged listing is left alone."""
    if settings.fallback_mode != "cache":
        return False
    listing = mirror.load_listing(Tree.of(settings), project)
    if listing is None or not listing.found:
        return False
    admitted = mirror.admitted_upstream(settings, project)
    folder = Tree.of(settings).upstream_dir(project)
    page = build_project_page(project, merge_files([admitted.entries]), admitted.tracks,
                              admitted.status, admitted.alternate_locations)
    if listing.versions and not admitted.withheld:
        page["versions"] = list(listing.versions)  # the upstream's own list (PEP 700)
    body, html = render_json(page), render_project_html(page)
    with contextlib.suppress(OSError):  # unchanged: left as it is (its validators too)
        if regular_bytes(os.path.join(folder, "index.v1_json")) == body and \
                regular_bytes(os.path.join(folder, "index.html")) == html and \
                regular_bytes(os.path.join(folder, "index.var")) == TYPE_MAP:
            return False
    write_listing(writer, settings.root, folder, body, html, TYPE_MAP)
    if admitted.exceptions and page["files"]:
        mirror.audit_exceptions(settings, UPSTREAM_DIR, project, admitted.exceptions)
    return True


def rerender_upstream_pages(settings: Settings, report: Report) -> int:
    """Cache mode: bring every ``+upstream`` listing on disk in line with the release-age
    policy now (files age in; the policy may have changed). Returns how many changed."""
    if settings.fallback_mode != "cache":
        return 0
    tree = Tree.of(settings)
    try:
        folders = tree.projects_on_disk(UPSTREAM_DIR)
    except OSError as exc:
        report.skipped(UPSTREAM_DIR, exc)
        return 0
    changed = 0
    for name in folders:
        if not is_normalized_name(name):
            continue
        project = NormalizedName(name)
        try:
            with locked(tree, f"+fetch-{project}"):
                if render_upstream_page(settings, project, Writer()):
                    changed += 1
        except (OSError, ValueError) as exc:
            report.skipped(f"{UPSTREAM_DIR}/{project}", exc)
    report.listings += changed
    return changed


def _projects_to_visit(tree: Tree, scan_repos: Sequence[str], render_repos: Sequence[str],
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


def _quarantine_symlinks(tree: Tree, repo: str, report: Report) -> None:
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
            _reject(tree, repo, link, f"{link.name!r} is a symlink; never followed", report)
        except OSError as exc:
            report.skipped(f"{repo}/{link.name}", exc)


def _reject_folder(tree: Tree, repo: str, folder: str, report: Report) -> None:
    """A folder whose name is not a normalized project name: its files go to quarantine."""
    path = tree.repo_dir(repo) / folder
    hint = canonicalize_name(folder) if folder.isprintable() else "a normalized name"
    for entry in os.scandir(path):
        if not entry.name.startswith(".") and (entry.is_file(follow_symlinks=False)
                                               or entry.is_symlink()):
            try:
                _reject(tree, repo, Path(entry.path),
                        f"folder {folder!r} is not a normalized project name; use {hint!r}",
                        report)
            except OSError as exc:
                report.skipped(f"{repo}/{folder}/{entry.name}", exc)


def _clean_repo_folder(tree: Tree, repo: str, report: Report) -> None:
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
            _reject(tree, repo, Path(entry.path),
                    f"files belong in {repo}/<project>/, not in {repo}/", report)
        except OSError as exc:
            report.skipped(f"{repo}/{entry.name}", exc)


def write_status(tree: Tree, report: Report) -> None:
    import json

    body = {"last_regeneration": utc_timestamp(), "projects": report.projects,
            "quarantined": len(report.quarantined)}
    Writer().write(tree.status_path, json.dumps(body).encode())


def terminal_progress(done: int, total: int) -> None:
    """A progress line on a terminal, redrawn in place; nothing when piped."""
    if sys.stderr.isatty():
        end = "\n" if done >= total else ""
        sys.stderr.write(f"\rregen-index: {done}/{total} projects{end}")
        sys.stderr.flush()


def apply_policy(settings: Settings) -> Report:
    """Bring every listing that holds upstream files in line with the release-age policy
    now: the cache-mode pages under ``+upstream`` and the listings of public projects
    published here (overlays, pinned files). Run by the app when the policy changes; every
    full ``regen-index`` run does the same."""
    tree = Tree.of(settings)
    report = Report()
    rerender_upstream_pages(settings, report)
    folder = tree.state / "upstream"
    cached = sorted(p.name[:-5] for p in folder.glob("*.json")) if folder.is_dir() else []
    local = [n for n in cached if is_normalized_name(n) and any(
        tree.record_path(r, NormalizedName(n)).exists() for r in settings.repos)]
    if local:
        done = regenerate(settings, names=local)
        report.listings += done.listings
        report.errors += done.errors
    return report
