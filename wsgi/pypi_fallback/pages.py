"""Pages for people: what each page shows, gathered from the records, the audit log and
the metadata kept at upload, rendered by ``pagehtml`` and written through ``storage``.

Static like everything else that is read: Apache serves them, no Python on the read path.

- ``<root>/+pages/<project>/index.html``: a project page, rewritten when the project is
  published, promoted, yanked, removed, pinned or regenerated (``refresh_projects``);
  unchanged inputs (their fingerprint) write nothing.
- ``<root>/index.html``: the landing page at ``<prefix>/`` (the HTML answer; the JSON
  answer for machines is the repositories page ``deployment`` writes), with
  ``<root>/+pages/search.json``, the search index its script reads. Both cost O(projects)
  to rebuild, so the app folds them like root listings (``PageRefresher``): an upload never
  pays for them. ``regen-index`` and the QC commands rebuild them directly.

What is kept in ``<state>/pages/``: ``trails/<project>.json``, each project's audit trail,
folded in from ``audit.jsonl`` past the mark ``audit-mark.json`` (so a page never reads
the whole log); ``projects/<project>.json``, the inputs' fingerprint and the project's
search entry; ``metadata/<sha256>``, the core metadata of an sdist (a wheel's is on disk
beside it as ``<file>.metadata``), so that an archive is opened once.

All of it is derived from the records, the audit log and the tree, so it is written
atomically but without fsync (``storage.Volatile``): an upload pays no disk flush for its
pages. What a crash loses is rebuilt: an empty or missing page, or a fingerprint that no
longer matches, is rendered again by the next ``regen-index``; a damaged trail makes the
next fold read the audit log from its start again.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.metadata import RawMetadata

from . import mirror
from .archive import inspect_dist
from .config import Settings
from .errors import PyPIFallbackError, RecordCorrupt
from .listing import TEMPLATES, version_key
from .names import NormalizedName, RepoName, is_normalized_name, parse_dist_filename
from .pagehtml import (
    PAGES_URL,
    FileRow,
    Install,
    LandingView,
    Metadata,
    ProjectView,
    Recent,
    RepoRow,
    TrailRow,
    VersionRow,
    metadata_of,
    parse_metadata,
    render_landing_page,
    render_project_page,
    render_search_index,
    search_entry,
    static_files,
)
from .records import CLAIM_REASONS, AuditEntry, FileRecord, ProjectRecord
from .storage import (
    PAGES_DIR,
    Tree,
    Volatile,
    Writer,
    load_claims,
    load_record,
    locked,
    read_range,
)

# Bumped when what a page shows changes, so that regen-index renders every page again.
PAGE_VERSION = "1"
RECENT = 15  # entries of the landing page's recent uploads and promotions
RECENT_ACTIONS = ("upload", "promote")
TRAIL_KEEP = 1000  # newest audit entries kept (and shown) per project
TAIL_BYTES = 256 * 1024  # read from the end of the audit log for the landing page

assert PAGES_URL == PAGES_DIR


def pages_root(settings: Settings) -> Path:
    return settings.root / PAGES_DIR


def _state(tree: Tree) -> Path:
    return tree.state / "pages"


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _load_json(path: Path, default: Any) -> Any:
    raw = _read(path)
    if raw is None:
        return default
    try:
        return json.loads(raw)
    except ValueError:
        return default


def _dump(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


# -- the audit trail of each project, folded in from the audit log --------------------------


def fold_audit(tree: Tree) -> set[NormalizedName]:
    """Append the audit log's new lines to the trails of their projects; return those
    projects. Reads only what was appended since the last fold (a rotated log is read from
    its start; an entry seen before is not added twice)."""
    state = _state(tree)
    mark_path = state / "audit-mark.json"
    with locked(tree, "+pages-audit"):
        try:
            st = tree.audit_log.stat()
        except FileNotFoundError:
            return set()
        mark = _load_json(mark_path, {})
        offset = mark.get("offset", 0) if mark.get("inode") == st.st_ino else 0
        if not isinstance(offset, int) or offset > st.st_size:
            offset = 0
        if offset == st.st_size:
            return set()
        data = read_range(tree.audit_log, offset, st.st_size)
        end = data.rfind(b"\n") + 1  # a line being appended is read next time
        new: dict[NormalizedName, list[AuditEntry]] = {}
        for line in data[:end].splitlines():
            try:
                entry = AuditEntry.from_json(json.loads(line))
            except ValueError:
                continue
            project = entry.project if entry is not None else None
            if entry is not None and project is not None and is_normalized_name(project):
                new.setdefault(NormalizedName(project), []).append(entry)
        writer = Volatile()
        damaged = False
        for project, entries in new.items():
            path = state / "trails" / f"{project}.json"
            trail = _load_json(path, None)
            if not isinstance(trail, list):
                # damaged by a crash (written without fsync): read the whole log again
                damaged = path.exists()
                trail = []
            seen = {_dump(e) for e in trail}
            trail += [e.to_json() for e in entries if _dump(e.to_json()) not in seen]
            writer.write(path, _dump(trail[-TRAIL_KEEP:]))
        if damaged and offset:
            writer.remove(mark_path)
        else:
            writer.write(mark_path, _dump({"inode": st.st_ino, "offset": offset + end}))
        return set(new)


def _trail(tree: Tree, project: NormalizedName) -> list[AuditEntry]:
    trail = _load_json(_state(tree) / "trails" / f"{project}.json", [])
    entries = [AuditEntry.from_json(e) for e in trail] if isinstance(trail, list) else []
    return [e for e in entries if e is not None]


# -- a project page ----------------------------------------------------------------------------


def _link(url: str) -> str:
    """An upstream file's URL as a page may link it: http(s) or relative, else no link."""
    scheme = url.split(":", 1)[0].lower() if ":" in url.split("/", 1)[0] else ""
    return url if scheme in ("", "http", "https") else ""


def _yank(value: Any) -> str | None:
    if value is False or value is None:
        return None
    return value if isinstance(value, str) else ""


def _detail(entry: AuditEntry) -> str:
    if entry.action == "promote" and entry.get("from"):
        return f"from {entry.get('from')}"
    if entry.get("reason"):
        return str(entry.get("reason"))
    if entry.get("claim"):
        return "claimed the name"  # a new name, never looked up upstream again
    return ""


@dataclass
class Known:
    """What ``regen-index`` has in hand for the projects of a batch, so that their pages
    are made without reading or parsing it again: the records it read or wrote (with the
    bytes of their files, ``ProjectRecord.stored``), the core metadata it parsed (by the
    distribution's sha256), and the names it claims at its end ("published")."""

    records: dict[tuple[str, str], ProjectRecord] = field(default_factory=dict)
    parsed: dict[str, RawMetadata] = field(default_factory=dict)
    held: set[str] = field(default_factory=set)

    def record(self, tree: Tree, repo: str, project: NormalizedName) -> ProjectRecord:
        known = self.records.get((repo, project))
        return known if known is not None else load_record(tree, repo, project)

    def record_bytes(self, tree: Tree, repo: str, project: NormalizedName) -> bytes | None:
        known = self.records.get((repo, project))
        return known.stored if known is not None else _read(tree.record_path(repo, project))


def _metadata(settings: Settings, tree: Tree, repo: RepoName, project: NormalizedName,
              filename: str, rec: FileRecord, writer: Writer, known: Known) -> Metadata | None:
    """The core metadata of a published file: as parsed by the caller, else a wheel's
    ``.metadata`` beside it, else the copy kept in the state folder, else read from the
    archive once and kept."""
    fields = known.parsed.get(rec.sha256)
    if fields is not None:
        return metadata_of(fields)
    path = tree.project_dir(repo, project) / filename
    if rec.metadata_sha256:
        raw = _read(path.with_name(filename + ".metadata"))
        if raw is not None:
            return parse_metadata(raw)
    kept = _state(tree) / "metadata" / rec.sha256
    raw = _read(kept)
    if raw is not None:
        return parse_metadata(raw)
    try:
        meta = inspect_dist(path, parse_dist_filename(filename))
    except (PyPIFallbackError, OSError):
        return None
    writer.write(kept, meta.raw)
    return metadata_of(meta.fields)


def _inputs(settings: Settings, tree: Tree, project: NormalizedName, claim: str | None,
            known: Known) -> tuple[str, dict[str, bytes | None]]:
    """Everything a project page is made of, as bytes, and their fingerprint."""
    raw: dict[str, bytes | None] = {
        f"record:{repo}": known.record_bytes(tree, repo, project) for repo in settings.repos}
    raw["trail"] = _read(_state(tree) / "trails" / f"{project}.json")
    raw["upstream"] = _read(mirror.listing_path(tree, project))
    if settings.fallback_mode == "cache":
        with contextlib.suppress(FileNotFoundError):
            raw["cached"] = "\n".join(sorted(os.listdir(tree.upstream_dir(project)))
                                      ).encode()
    h = hashlib.sha256(f"{_renderer()}\n{settings.url_prefix}\n{claim}\n"
                       f"{settings.is_overlay(project)}\n".encode())
    for name, repo in settings.repos.items():
        h.update(f"{name}:{','.join(repo.fallback)}:{','.join(repo.writers)}\n".encode())
    for key in sorted(raw):
        h.update(f"{key}\n".encode())
        h.update(hashlib.sha256(raw[key] or b"").digest())
    return h.hexdigest(), raw


@functools.cache
def _renderer() -> str:
    """What renders a page, as a fingerprint: PAGE_VERSION and the template's source (an
    upgrade that changes the template renders every page again)."""
    assert TEMPLATES.loader is not None
    source = TEMPLATES.loader.get_source(TEMPLATES, "page_project.html")[0]
    return f"{PAGE_VERSION}:{hashlib.sha256(source.encode()).hexdigest()}"


Rows = dict[str, dict[str, Any]]  # filename -> the fields of its row on the page


def project_view(settings: Settings, tree: Tree, project: NormalizedName,
                 claim: str | None, writer: Writer, known: Known
                 ) -> ProjectView | None:
    """What the page of ``project`` shows; None when nothing was ever published here."""
    records = {repo: known.record(tree, repo, project) for repo in settings.repos}
    if not any(r.files or r.tombstones for r in records.values()):
        return None
    trail = _trail(tree, project)
    rows = _local_rows(project, records, trail)
    _add_removed_rows(records, rows)
    public = settings.is_overlay(project) or any(
        rec.pinned for r in records.values() for rec in r.files.values())
    if public:
        _add_upstream_rows(settings, tree, project, rows)
    versions = _version_rows(rows)
    latest, metadata = _described(settings, tree, project, rows, versions, writer, known)
    holders = [repo for repo, record in records.items() if record.files]
    install = tuple(Install(repo, f"../../{repo}/", f"{settings.url_prefix}/{repo}/")
                    for repo in settings.repos
                    if set(settings.chain(repo)) & set(holders)
                    or (public and settings.reaches_upstream(repo)))
    trail_rows = tuple(TrailRow(
        time=e.time, user=e.user or "upstream cache",
        action=e.action, repo=str(e.get("repo", "")),
        filename=str(e.get("filename", "")), detail=_detail(e))
        for e in reversed(trail))
    return ProjectView(
        name=project, latest=latest, metadata=metadata, versions=versions, install=install,
        trail=trail_rows, overlay=settings.is_overlay(project),
        claimed=CLAIM_REASONS.get(claim or "", claim), repos=tuple(holders),
        status=tuple((repo, state.status, state.reason) for repo in holders
                     if (state := records[repo].status) is not None))


def _local_rows(project: NormalizedName, records: dict[RepoName, ProjectRecord],
                trail: list[AuditEntry]) -> Rows:
    """A row for each file published here, with every repo holding it and its yanks."""
    uploader: dict[tuple[str, str], str] = {}
    for e in trail:
        if e.action in ("upload", "pin") and e.user:
            uploader[(str(e.get("repo")), str(e.get("filename")))] = e.user
    rows: Rows = {}
    for repo, record in records.items():
        for filename, rec in sorted(record.files.items()):
            if rec.pinned:
                label = f"pinned in {repo}"
            elif rec.promoted_from:
                label = f"{repo} (promoted from {rec.promoted_from})"
            else:
                label = repo
            row = rows.setdefault(filename, {
                "filename": filename, "url": f"../../{repo}/{project}/{filename}",
                "size": rec.size, "sha256": rec.sha256,
                "upload_time": rec.upload_time or None, "uploader": None, "where": [],
                "yanked": None, "yanks": {}, "version": rec.version,
                "repo": repo, "rec": rec})
            row["where"].append(label)
            row["uploader"] = row["uploader"] or uploader.get((repo, filename))
            if _yank(rec.yanked) is not None:
                row["yanks"][repo] = _yank(rec.yanked)
    for row in rows.values():
        yanks = row["yanks"]
        if yanks and len(yanks) == len(row["where"]) and len(set(yanks.values())) == 1:
            row["yanked"] = next(iter(yanks.values()))  # yanked wherever it is
        elif yanks:
            row["yanked"] = "; ".join(f"in {repo}" + (f": {why}" if why else "")
                                      for repo, why in yanks.items())
    return rows


def _add_removed_rows(records: dict[RepoName, ProjectRecord], rows: Rows) -> None:
    """A row for each file removed here (its tombstone) and not published anywhere."""
    for repo, record in records.items():
        for filename, stone in sorted(record.tombstones.items()):
            if filename in rows:
                continue
            try:
                version = str(parse_dist_filename(filename).version)
            except PyPIFallbackError:
                continue
            rows[filename] = {"filename": filename, "url": "", "size": None,
                              "sha256": stone.sha256 or None, "upload_time": stone.time or None,
                              "uploader": stone.by, "where": [repo], "yanked": None,
                              "removed": stone.why, "version": version}


def _add_upstream_rows(settings: Settings, tree: Tree, project: NormalizedName,
                       rows: Rows) -> None:
    """A public project: a row for each upstream file a listing here offers."""
    cached = tree.upstream_dir(project)
    for entry in mirror.upstream_entries(settings, project):
        if entry.filename in rows:
            continue
        here = settings.fallback_mode == "cache" and (cached / entry.filename).exists()
        rows[entry.filename] = {
            "filename": entry.filename, "url": _link(entry.url), "size": entry.size,
            "sha256": entry.sha256, "upload_time": entry.upload_time, "uploader": None,
            "where": ["cached from upstream" if here else "upstream"],
            "yanked": _yank(entry.yanked), "version": entry.version}


def _version_rows(rows: Rows) -> tuple[VersionRow, ...]:
    by_version: dict[str, list[FileRow]] = {}
    for row in sorted(rows.values(), key=lambda r: r["filename"]):
        by_version.setdefault(row["version"], []).append(FileRow(
            filename=row["filename"], url=row["url"], size=row["size"], sha256=row["sha256"],
            upload_time=row["upload_time"], uploader=row["uploader"],
            where=tuple(row["where"]), yanked=row["yanked"], removed=row.get("removed")))
    return tuple(VersionRow(v, tuple(files)) for v, files in
                 sorted(by_version.items(), key=lambda kv: version_key(kv[0]), reverse=True))


def _described(settings: Settings, tree: Tree, project: NormalizedName, rows: Rows,
               versions: tuple[VersionRow, ...], writer: Writer, known: Known
               ) -> tuple[str, Metadata]:
    """The release the page describes, and its metadata: the newest local release that is
    not yanked (else the newest local one; else the newest listed, without metadata)."""
    live = [r for r in rows.values() if "rec" in r]
    choice = sorted(live, key=lambda r: (r["yanked"] is None, version_key(r["version"]),
                                         r["filename"].endswith(".whl")))
    if not choice:
        return (versions[0].version if versions else ""), Metadata()
    latest = choice[-1]["version"]
    for r in sorted((r for r in live if r["version"] == latest),
                    key=lambda r: not r["filename"].endswith(".whl")):
        meta = _metadata(settings, tree, r["repo"], project, r["filename"], r["rec"], writer,
                         known)
        if meta is not None:
            return latest, meta
    return latest, Metadata()


def refresh_projects(settings: Settings, projects: Iterable[str], *, force: bool = False,
                     batch_size: int = 200, known: Known | None = None
                     ) -> set[NormalizedName]:
    """Bring the pages of ``projects`` up to date (after folding in the audit log); return
    the projects whose search entry changed (for the landing page). ``known``: what the
    caller read already (it holds the projects' locks: nothing changed since)."""
    if not settings.pages:
        return set()
    known = known if known is not None else Known()
    tree = Tree.of(settings)
    fold_audit(tree)
    claims = load_claims(tree)
    wanted = sorted({NormalizedName(p) for p in projects if is_normalized_name(p)})
    changed: set[NormalizedName] = set()
    for start in range(0, len(wanted), batch_size):
        chunk = wanted[start:start + batch_size]
        writer = Volatile()
        with contextlib.ExitStack() as stack:
            for project in chunk:
                stack.enter_context(locked(tree, f"+page-{project}"))
                try:
                    claim = claims.get(project) or (
                        "published" if project in known.held else None)
                    if _refresh_one(settings, tree, project, claim, writer, force, known):
                        changed.add(project)
                except RecordCorrupt:  # its page stays as it was; regen-index names the file
                    continue
    return changed


def _refresh_one(settings: Settings, tree: Tree, project: NormalizedName, claim: str | None,
                 writer: Writer, force: bool, known: Known) -> bool:
    state_path = _state(tree) / "projects" / f"{project}.json"
    page = pages_root(settings) / project / "index.html"
    fingerprint, _raw = _inputs(settings, tree, project, claim, known)
    state = _load_json(state_path, {})
    try:
        written = page.stat().st_size > 0  # (empty: a crash before it reached the disk)
    except FileNotFoundError:
        written = False
    if not force and state.get("fingerprint") == fingerprint and written:
        return False
    view = project_view(settings, tree, project, claim, writer, known)
    if view is None:
        if state or page.exists():
            writer.remove(page)
            writer.remove(state_path)
            return True
        return False
    entry = search_entry(view)
    writer.write(page, render_project_page(view))
    writer.write(state_path, _dump({"fingerprint": fingerprint, "entry": entry}))
    return bool(state.get("entry") != entry)


# -- the landing page and the search index ---------------------------------------------------


def _recent(tree: Tree) -> list[Recent]:
    """The newest uploads and promotions, from the end of the audit log."""
    try:
        data = read_range(tree.audit_log, -TAIL_BYTES)
    except FileNotFoundError:
        return []
    lines = data.splitlines()
    if len(data) >= TAIL_BYTES:
        lines = lines[1:]  # the first may be cut
    found: list[Recent] = []
    for line in reversed(lines):
        try:
            e = AuditEntry.from_json(json.loads(line))
        except ValueError:
            continue
        if e is None or e.action not in RECENT_ACTIONS:
            continue
        if e.project is None or not is_normalized_name(e.project):
            continue
        found.append(Recent(e.time, e.user or "", e.action, str(e.get("repo", "")), e.project,
                            str(e.get("filename", "")), _detail(e)))
        if len(found) >= RECENT:
            break
    return found


def _all_entries(tree: Tree) -> dict[str, dict[str, Any]]:
    folder = _state(tree) / "projects"
    entries: dict[str, dict[str, Any]] = {}
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return entries
    for name in names:
        if name.endswith(".json") and not name.startswith("."):
            entry = _load_json(folder / name, {}).get("entry")
            if isinstance(entry, dict) and is_normalized_name(name[:-5]):
                entries[name[:-5]] = entry
    return entries


def refresh_landing(settings: Settings, changed: Iterable[str] | None = None) -> None:
    """Rewrite the landing page and the search index: from every project's entry when
    ``changed`` is None (or no index exists yet), else by updating the entries of
    ``changed`` in the current index."""
    if not settings.pages:
        return
    tree = Tree.of(settings)
    index_path = pages_root(settings) / "search.json"
    with locked(tree, "+pages-landing"):
        entries: dict[str, dict[str, Any]] | None = None
        if changed is not None:
            current = _load_json(index_path, None)
            if isinstance(current, dict) and isinstance(current.get("projects"), list):
                fields = current.get("fields", [])
                entries = {row[0]: dict(zip(fields, row, strict=False))
                           for row in current["projects"]}
                for project in changed:
                    entry = _load_json(_state(tree) / "projects" / f"{project}.json",
                                       {}).get("entry")
                    if isinstance(entry, dict):
                        entries[project] = entry
                    else:
                        entries.pop(project, None)
        if entries is None:
            entries = _all_entries(tree)
        ordered = [entries[name] for name in sorted(entries)]
        counts = {name: 0 for name in settings.repos}
        for e in ordered:
            for repo in e.get("repos", []):
                if repo in counts:
                    counts[repo] += 1
        repos = tuple(RepoRow(name, repo.fallback, counts[name], repo.writers)
                      for name, repo in settings.repos.items())
        view = LandingView(repos, tuple(_recent(tree)), ordered)
        writer = Volatile()
        files = {pages_root(settings) / "+static" / name: body
                 for name, body in static_files().items()}
        files[index_path] = render_search_index(ordered)
        files[settings.root / "index.html"] = render_landing_page(view)
        for path, body in files.items():
            if _read(path) != body:  # unchanged files keep their date (HTTP caches)
                writer.write(path, body)


def refresh(settings: Settings, projects: Iterable[str] | None = None) -> None:
    """The pages of ``projects`` (every project with a record when None: ``regen-index``'s
    full run), then the landing page and the search index. For commands; the app folds
    the landing page with ``PageRefresher`` instead."""
    if not settings.pages:
        return
    if projects is None:
        refresh_projects(settings, recorded_projects(Tree.of(settings), settings.repos))
        refresh_landing(settings, None)
    else:
        refresh_landing(settings, refresh_projects(settings, projects))


def recorded_projects(tree: Tree, repos: Iterable[str]) -> set[str]:
    """The projects with a record in one of ``repos`` (not yet validated)."""
    names: set[str] = set()
    for repo in repos:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            names.update(n[:-5] for n in os.listdir(tree.state / "records" / repo)
                         if n.endswith(".json"))
    return names


class PageRefresher:
    """The app's pages, after responses, folded like root listings: the first upload's
    project page, landing page and search index are rewritten at once (after its response
    is sent); later uploads within the interval are folded into one rebuild at its end.
    So a burst of uploads pays for one rebuild, never for one each, and an upload's own
    latency never includes them."""

    def __init__(self, settings: Settings, interval: float = 2.0) -> None:
        self.settings, self.interval = settings, interval
        self._lock = threading.Lock()
        self._last = -1e9
        self._pending: set[str] = set()
        self._scheduled = False
        self._timer: threading.Timer | None = None

    def has_page(self, project: NormalizedName) -> bool:
        """A local project (an overlay, or one with pinned files) has a page; a project
        only cached from the upstream has none."""
        return self.settings.pages and (pages_root(self.settings) / project).is_dir()

    def request(self, projects: Sequence[str]) -> None:
        if not self.settings.pages:
            return
        with self._lock:
            self._pending |= set(projects)
            if self._scheduled:
                return
            wait = self._last + self.interval - time.monotonic()
            if wait > 0:
                self._scheduled = True
                self._timer = threading.Timer(wait, self._flush)
                self._timer.daemon = True
                self._timer.start()
                return
            self._last = time.monotonic()
        self._flush()

    def _flush(self) -> None:
        with self._lock:
            todo, self._pending = self._pending, set()
            self._scheduled = False
            self._last = time.monotonic()
        if todo:
            # the landing page's recent uploads change even when no search entry does
            refresh_projects(self.settings, todo)
            refresh_landing(self.settings, todo)
