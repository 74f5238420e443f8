"""Regeneration: from the files on disk to published listings: the writer.

``scan`` brings each project's record in line with its folder (validating, quarantining);
``render`` turns records and the upstream files admitted into listing bytes (pure);
``publish_listings`` and ``publish_root`` write what changed. Uploads, the QC commands and
``regen-index`` share them, under the same per-project lock. The cache-mode pages under
``+upstream`` are kept by ``upstream_pages``.

``regenerate`` works in batches of projects: each batch is scanned and its listings
written (one durable flush), then its pages for people are made from what the batch read,
wrote and parsed (``pages.Known``). A full run first skips every project whose stamp
(``stamps``) is the one the last full run left.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import stat
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from . import mirror
from .config import Settings
from .errors import RecordCorrupt
from .listing import TYPE_MAP
from .names import NormalizedName, RepoName, is_normalized_name
from .pages import Known, fold_audit, recorded_projects, refresh_landing, refresh_projects
from .policywatch import record_policy
from .records import ProjectRecord
from .render import is_public, render_project_listing, render_root_listing
from .scan import Report, clean_repo_folder, projects_to_visit, reject, scan_project
from .stamps import load_stamps, project_stamp, run_constants, save_stamps
from .storage import (
    LISTING_FILES,
    Batch,
    Tree,
    Undo,
    Writer,
    add_claims,
    load_claims,
    load_record,
    locked,
    regular_bytes,
    utc_timestamp,
    write_listing,
)
from .upstream import Upstream, project_url
from .upstream_pages import refresh_upstream_listings, rerender_upstream_pages, revalidation_lock

Records = dict[tuple[RepoName, NormalizedName], ProjectRecord]


def publish_listings(settings: Settings, tree: Tree, project: NormalizedName,
                     repos: Iterable[RepoName], records: Records, writer: Writer,
                     report: Report, dirty: set[RepoName] | None = None,
                     upstream_url: Callable[[], str] | None = None) -> set[RepoName]:
    """Write the listings of ``project`` in each of ``repos`` (rendered by ``render``);
    return the repos whose set of projects changed (the project appeared or disappeared
    there). ``upstream_url``: the upstream's URL, resolved at most once, when a listing
    tracks the upstream (PEP 708).

    A record that changes (it keeps its listing's fingerprint) is written at once, or,
    when ``dirty`` is given, noted there for the caller to write once."""
    resolve = upstream_url or upstream_url_once(settings)
    roots_changed: set[RepoName] = set()
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
        chain = [(holder, _record(tree, holder, project, records))
                 for holder in settings.chain(repo)]
        admitted, tracks = None, []
        if settings.reaches_upstream(repo) and is_public(settings, project,
                                                         (r for _, r in chain)):
            admitted = mirror.admitted_upstream(settings, project)
            tracks = [project_url(resolve(), project)]
        page = render_project_listing(project, repo, chain, admitted, tracks)
        if os.path.islink(folder):  # never written through (the repo pass quarantines it)
            continue
        listed = os.path.exists(os.path.join(folder, "index.v1_json"))
        if record.listing == page.fingerprint and listed and \
                record.listing_html == page.html_fingerprint and \
                listing_intact(settings.root, folder, page.body, record.listing_html):
            continue  # (the HTML compared too: an upgrade may render it otherwise)
        if not listed:
            roots_changed.add(repo)
        for name in LISTING_FILES:  # what this program did not write goes, links included
            try:
                mode = os.lstat(os.path.join(folder, name)).st_mode
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(mode):
                reject(tree, repo, folder / name,
                       f"{name!r} is not a listing this program wrote", report)
        write_listing(writer, settings.root, folder, page.body, page.html, TYPE_MAP)
        record.listing = page.fingerprint
        record.listing_html = page.html_fingerprint
        _changed(tree, repo, project, record, writer, dirty)
        report.listings += 1
        if admitted is not None and admitted.exceptions and page.offers_files:
            mirror.audit_exceptions(settings, repo, project, admitted.exceptions)
    return roots_changed


def publish_listings_undoable(settings: Settings, tree: Tree, project: NormalizedName,
                              repo: RepoName, records: Records, undo: Undo) -> set[RepoName]:
    """``publish_listings`` of the repos showing ``repo``, within a publish that may be
    taken back: if it is, the listings are rendered again from the records as they were
    then. The caller writes the records."""
    def rerender() -> None:
        for record in records.values():
            record.listing = None  # a listing half-written: write it again
        publish_listings(settings, tree, project, settings.dependents(repo), records,
                         Writer(), Report(), set())

    undo.then(rerender)
    return publish_listings(settings, tree, project, settings.dependents(repo), records,
                            Writer(), Report(), set())


def upstream_url_once(settings: Settings) -> Callable[[], str]:
    """The upstream URL, resolved (which may ask pip) the first time it is needed only."""
    return functools.cache(lambda: mirror.resolved_upstream_url(settings))


def listing_intact(root: Path, folder: Path, body: bytes, html_sha256: str | None) -> bool:
    """The listing files on disk are the ones this program wrote: ``index.v1_json`` has the
    bytes it would write, ``index.html`` the hash recorded, ``index.var`` is the shared
    type map (a hard link; or a copy with its bytes, linked before the shared one was made
    anew: see ``storage.link_shared``), and none is a symlink."""
    base = os.fspath(folder)
    try:
        var = os.lstat(base + "/index.var")
        shared = os.fspath(root) + "/.index.var"
        if not stat.S_ISREG(var.st_mode) or var.st_ino != os.lstat(shared).st_ino and \
                regular_bytes(base + "/index.var") != regular_bytes(shared):
            return False
        return html_sha256 is not None and regular_bytes(base + "/index.v1_json") == body \
            and hashlib.sha256(regular_bytes(base + "/index.html")).hexdigest() == html_sha256
    except OSError:
        return False


def _changed(tree: Tree, repo: RepoName, project: NormalizedName, record: ProjectRecord,
             writer: Writer, dirty: set[RepoName] | None) -> None:
    if dirty is None:
        writer.write(tree.record_path(repo, project), record.dump())
    else:
        dirty.add(repo)


def _record(tree: Tree, repo: RepoName, project: NormalizedName, records: Records) -> ProjectRecord:
    key = (repo, project)
    if key not in records:
        records[key] = load_record(tree, repo, project)
    return records[key]


def root_projects(settings: Settings, tree: Tree, repo: RepoName) -> set[str]:
    """The projects a repo's root listing shows: those with a listing in its chain."""
    names: set[str] = set()
    for holder in settings.chain(repo):
        base = str(tree.repo_dir(holder))
        names.update(p for p in tree.projects_on_disk(holder)
                     if os.path.exists(os.path.join(base, p, "index.v1_json")))
    return names


def listed_in_root(body: bytes) -> set[str] | None:
    """The names a root listing's JSON holds; None if it is not one this program wrote."""
    try:
        page = json.loads(body)
        names = {p["name"] for p in page["projects"]}
    except (ValueError, TypeError, KeyError):
        return None
    return names if all(isinstance(n, str) and is_normalized_name(n) for n in names) else None


def publish_root(settings: Settings, tree: Tree, repo: RepoName, writer: Writer,
                 added: Iterable[NormalizedName] | None = None) -> bool:
    """Rewrite a repo's root listing if its set of projects changed. ``added``: only these
    projects may have appeared (an upload): they are folded into the listing as it is,
    with no walk of the repositories (a full rebuild if the listing cannot be read)."""
    folder = tree.repo_dir(repo)
    try:
        current: bytes | None = (folder / "index.v1_json").read_bytes()
    except FileNotFoundError:
        current = None
    names = listed_in_root(current) if added is not None and current is not None else None
    if names is None or added is None:
        names = root_projects(settings, tree, repo)
    else:
        chain = [str(tree.repo_dir(holder)) for holder in settings.chain(repo)]
        names.update(p for p in added if any(
            os.path.exists(os.path.join(base, p, "index.v1_json")) for base in chain))
    page = render_root_listing(names)
    if current == page.body:
        return False
    write_listing(writer, settings.root, folder, page.body, page.html, TYPE_MAP)
    return True


def refresh_roots(settings: Settings, repos: Iterable[RepoName],
                  added: Iterable[NormalizedName] | None = None) -> None:
    """Bring the root listings of ``repos`` up to date, each under its own lock; with
    ``added``, by folding those projects in (see ``publish_root``)."""
    tree = Tree.of(settings)
    names = None if added is None else list(added)
    for repo in repos:
        with locked(tree, f"+root-{repo}"):
            publish_root(settings, tree, repo, Writer(), names)


Progress = Callable[[int, int], None]


def regenerate(settings: Settings, repos: Sequence[RepoName] | None = None,
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
    render_repos: list[RepoName] = []
    for repo in scan_repos:
        render_repos += [r for r in settings.dependents(repo) if r not in render_repos]
    projects = projects_to_visit(tree, scan_repos, render_repos, names, report)
    if refresh_upstream:
        projects = sorted(set(projects) | {p for p in refreshed if not names or p in names})
    for project in projects:
        if settings.is_overlay(project) and mirror.load_listing(tree, project) is None:
            refresh_upstream_listings(settings, [project], report, force=True)
    roots: set[RepoName] = set()
    held: set[NormalizedName] = set()
    upstream_url = upstream_url_once(settings)
    searched: set[NormalizedName] = set()  # projects whose search entry may have changed
    # a full run skips the projects whose stamp is unchanged (stamps.py)
    full_run = not names and set(scan_repos) == set(settings.repos)
    if full_run and settings.pages:
        fold_audit(tree)  # the trails, which stamps cover, as of now
    stamps = load_stamps(tree, run_constants(settings, tree)) if full_run else {}
    incremental = bool(stamps)  # the last full run completed, under the same constants
    claims = load_claims(tree) if full_run else {}
    for start in range(0, len(projects), batch_size):
        chunk = projects[start:start + batch_size]
        todo = [p for p in chunk if stamps.get(p) is None
                or stamps[p] != project_stamp(settings, tree, p, claims.get(p))]
        searched.update(todo)
        stamps.update(dict.fromkeys(todo, ""))  # "": not (yet) brought up to date
        writer = Batch(settings.root)
        known = Known()
        private: set[NormalizedName] = set()  # projects done whose listings are local only
        with contextlib.ExitStack() as stack:
            for project in todo:
                stack.enter_context(locked(tree, project))
                errors = len(report.errors)
                try:
                    if _regenerate_project(settings, tree, project, scan_repos, render_repos,
                                           writer, report, roots, held, upstream_url, known):
                        private.add(project)
                except (OSError, ValueError, RecordCorrupt) as exc:  # the rest goes on
                    report.skipped(project, exc)
                    known.records = {k: r for k, r in known.records.items() if k[1] != project}
                if len(report.errors) > errors:
                    private.discard(project)  # something was skipped: never stamped
            try:
                writer.flush()
            except OSError as exc:
                report.skipped(f"{chunk[0]}…{chunk[-1]}", exc)
                known, private = Known(), set()  # not written: the pages read what is on disk
            # pages for people (pages.py), from what this batch read, wrote and parsed,
            # under the projects' locks (an upload's page is made after, not before)
            known.held = {p for p in todo if p in held}
            searched |= refresh_projects(settings, todo, known=known)
            if full_run:
                for project in private:
                    claim = claims.get(project) or ("published" if project in held else None)
                    stamps[project] = project_stamp(settings, tree, project, claim)
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
    add_claims(tree, {p: "published" for p in held}, fold=not names)
    for repo in scan_repos:
        clean_repo_folder(tree, repo, report)
    if names:
        refresh_landing(settings, searched)
    else:  # every page: those of records no folder holds any more too, then the landing
        searched |= refresh_projects(
            settings, set(recorded_projects(tree, settings.repos)) - set(projects))
        # from every page's entry; or, after a complete full run, the entries of the
        # projects visited (the others' are as that run left them)
        refresh_landing(settings, searched if incremental else None)
    if full_run:
        with contextlib.suppress(OSError):
            save_stamps(tree, run_constants(settings, tree),
                        {p: s for p, s in stamps.items() if s}, projects)
    write_status(tree, report)
    return report


def _regenerate_project(settings: Settings, tree: Tree, project: NormalizedName,
                        scan_repos: Sequence[RepoName], render_repos: Sequence[RepoName],
                        writer: Batch,
                        report: Report, roots: set[RepoName], held: set[NormalizedName],
                        upstream_url: Callable[[], str], known: Known) -> bool:
    """One project's scan and listings; whether its listings are local only (no upstream
    files merged: they do not change with time)."""
    records: Records = {}
    dirty: set[RepoName] = set()
    for repo in scan_repos:
        record = _record(tree, repo, project, records)
        if scan_project(tree, repo, project, record, writer, report, known.parsed):
            dirty.add(repo)
    roots |= publish_listings(settings, tree, project, render_repos, records, writer, report,
                              dirty, upstream_url)
    for repo in dirty:
        record = records[(repo, project)]
        record.stored = record.dump()
        writer.write(tree.record_path(repo, project), record.stored)
    public = is_public(settings, project, records.values())
    if any(rec.files for rec in records.values()) and not public:
        held.add(project)
    for key, record in records.items():
        known.records[key] = record
    return not public


def write_status(tree: Tree, report: Report) -> None:
    body = {"last_regeneration": utc_timestamp(), "projects": report.projects,
            "quarantined": len(report.quarantined)}
    Writer().write(tree.status_path, json.dumps(body).encode())


def terminal_progress(done: int, total: int) -> None:
    """A progress line on a terminal, redrawn in place; nothing when piped."""
    if sys.stderr.isatty():
        end = "\n" if done >= total else ""
        sys.stderr.write(f"\rregen-index: {done}/{total} projects{end}")
        sys.stderr.flush()


def refresh_overlay(settings: Settings, upstream: Callable[[], Upstream], repo: RepoName,
                    project: NormalizedName) -> None:
    """A local listing that merges the upstream's files (``+refresh``: its freshness stamp
    ran out): the upstream's listing revalidated, the project's listings rebuilt if it
    changed, stamped fresh. Anything else (a claimed name, no listing in ``repo``) is left
    as it is, for Apache to answer. While one request revalidates a project, the others
    are answered at once with the listing on disk: a hanging upstream holds one thread per
    project, never every thread of the daemon."""
    tree = Tree.of(settings)
    cached = mirror.load_listing(tree, project)
    if mirror.is_claimed(settings, project) or cached is None or not cached.found or \
            not (tree.project_dir(repo, project) / "index.v1_json").exists():
        return
    lock = revalidation_lock(project)
    if not lock.acquire(blocking=False):
        return
    try:
        listing = mirror.get_listing(settings, upstream(), project)
        if (listing.files, listing.versions) != (cached.files, cached.versions):
            regenerate(settings, names=[project])
        mirror.stamp_fresh(settings, listing)
    finally:
        lock.release()


def apply_policy(settings: Settings) -> Report:
    """Bring every listing that holds upstream files in line with the release-age policy
    now: the cache-mode pages under ``+upstream`` and the listings of public projects
    published here (overlays, pinned files). Run by the app when the policy changes; every
    full ``regen-index`` run does the same."""
    tree = Tree.of(settings)
    report = Report()
    rerender_upstream_pages(settings, report)
    local = [n for n in mirror.cached_projects(tree) if is_normalized_name(n) and any(
        tree.record_path(r, NormalizedName(n)).exists() for r in settings.repos)]
    if local:
        done = regenerate(settings, names=local)
        report.listings += done.listings
        report.errors += done.errors
    return report
