"""The QC workflow: promote, yank, remove, pin, verify and read the audit log.

Each change runs under the project lock shared with uploads and regen-index, writes
atomically, rebuilds the listings it touches and appends to the audit log with the
operator's identity. Nothing here overwrites a file of the same name with other bytes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from . import mirror
from .config import Settings
from .errors import BadRequest, FileExists, Forbidden, NotFound, VerifyFailed
from .names import NormalizedName, RepoName, parse_dist_filename, parse_project_name
from .pages import refresh as refresh_pages
from .records import (
    PROJECT_STATUSES,
    SIDECARS,
    AuditEntry,
    FileRecord,
    ProjectRecord,
    StatusRecord,
    Tombstone,
)
from .regen import Records, publish_listings, publish_listings_undoable, refresh_roots
from .scan import Report
from .storage import (
    Tree,
    Undo,
    Writer,
    append_audit,
    copy_to_tmp,
    discard,
    load_record,
    locked,
    read_lines,
    remove_empty_dir,
    sha256_file,
    utc_timestamp,
)
from .upstream import Upstream


def parse_spec(spec: str, where: str | None = None) -> tuple[NormalizedName, Version]:
    """``PROJECT==VERSION`` (a person's argument, a requirements line, a lock entry), parsed
    by packaging as a PEP 508 requirement that pins exactly one version: no extras, no
    marker, no URL, no wildcard."""
    where = where or repr(spec)
    try:
        req = Requirement(spec.strip())
    except InvalidRequirement as exc:
        raise BadRequest(f"{where}: {spec!r} is not pinned: expected PROJECT==VERSION ({exc})"
                         ) from None
    pins = list(req.specifier)
    if req.url or req.extras or req.marker or len(pins) != 1 or pins[0].operator != "==" \
            or pins[0].version.endswith(".*"):
        raise BadRequest(f"{where}: {spec!r} is not pinned: expected PROJECT==VERSION")
    try:
        version = Version(pins[0].version)
    except InvalidVersion:
        raise BadRequest(f"{where}: {pins[0].version!r} is not a valid version") from None
    return parse_project_name(req.name, f"name in {spec!r}"), version


def _release_files(record: ProjectRecord, version: Version) -> list[str]:
    found = []
    for name, rec in record.files.items():
        with contextlib.suppress(InvalidVersion):
            if Version(rec.version) == version:
                found.append(name)
    return sorted(found)


def _check_repo(settings: Settings, repo: str) -> RepoName:
    """A repository named by an operator, checked against the config."""
    name = settings.repo_named(repo)
    if name is not None:
        return name
    raise NotFound(f"No such repository {repo!r} (known: {', '.join(settings.repos)})")


def _rebuild(settings: Settings, tree: Tree, project: NormalizedName, repo: RepoName,
             records: Records) -> None:
    roots = publish_listings(settings, tree, project, settings.dependents(repo), records,
                             Writer(), Report())
    if roots:
        refresh_roots(settings, settings.viewers(roots))
    refresh_pages(settings, [project])  # pages for people (pages.py)


@dataclass(frozen=True)
class Copy:
    """One file to copy into a repo: from ``src`` (and its metadata file, if any)."""

    name: str
    src: Path
    metadata: Path | None
    rec: FileRecord
    audit: AuditEntry
    sha256: str
    sidecars: tuple[tuple[str, Path], ...] = ()  # (".provenance", path): kept beside it


def _publish_copies(settings: Settings, tree: Tree, project: NormalizedName, repo: RepoName,
                    records: Records, copies: list[Copy], **extra: Any) -> None:
    """Copy files into ``repo`` under the project lock: each into a temporary file (its
    sha256 checked), then the metadata and the record (entries marked pending), then the
    files made visible, the listings, the audit lines; any failure takes it all back."""
    record = records[(repo, project)]
    folder = tree.project_dir(repo, project)
    made_folder = not folder.exists()
    undo = Undo()
    if made_folder:
        undo.then(lambda: remove_empty_dir(folder))
    staged: list[tuple[Copy, Path, Path]] = []
    try:
        for copy in copies:
            final = folder / copy.name
            if os.path.lexists(final):
                raise FileExists(f"File already exists: {repo}/{project}/{copy.name} is on "
                                 "disk, waiting for regen-index")
            tmp = copy_to_tmp(copy.src, final)
            staged.append((copy, tmp, final))
            undo.then(functools.partial(discard, tmp), first=True)
            if sha256_file(tmp) != copy.sha256:  # the copy is what was asked for
                raise VerifyFailed(f"copy of {copy.name} does not match its sha256")
            record.files[copy.name] = replace(copy.rec, pending=True)
        undo.write(tree.record_path(repo, project), record.dump(), guard=True)
        for copy, _, final in staged:
            if copy.metadata is not None and copy.metadata.exists():
                undo.write(final.with_name(final.name + ".metadata"), copy.metadata.read_bytes())
            for suffix, src in copy.sidecars:
                data = src.read_bytes()
                if hashlib.sha256(data).hexdigest() != copy.rec.sidecar_sha256(suffix):
                    raise VerifyFailed(f"{src} does not match its recorded sha256; run verify")
                undo.write(final.with_name(final.name + suffix), data)
        for copy, tmp, final in staged:
            if not undo.link_new(tmp, final):
                raise FileExists(f"File already exists: {repo}/{project}/{copy.name}")
            discard(tmp)
            record.files[copy.name] = _new_entry(copy.rec, final, **extra)
        undo.then(lambda: refresh_roots(settings, settings.dependents(repo)))
        roots = publish_listings_undoable(settings, tree, project, repo, records, undo)
        if roots:
            refresh_roots(settings, settings.viewers(roots))
        for copy in copies:
            append_audit(tree, copy.audit)
        Writer().write(tree.record_path(repo, project), record.dump())
    except BaseException:
        for copy in copies:
            record.files.pop(copy.name, None)
        undo.rollback()
        raise
    finally:
        for _, tmp, _ in staged:
            discard(tmp)
    undo.commit()


def _new_entry(rec: FileRecord, final: Path, **extra: Any) -> FileRecord:
    """A copied file's record: its upload time is when it entered this repository."""
    st = final.stat()
    return replace(rec, size=st.st_size, mtime_ns=st.st_mtime_ns, yanked=False,
                   upload_time=utc_timestamp(), **extra)


def _sidecars(folder: Path, name: str, rec: FileRecord) -> tuple[tuple[str, Path], ...]:
    """The files kept beside ``name`` that its record vouches for."""
    return tuple((suffix, folder / f"{name}{suffix}") for suffix in SIDECARS
                 if rec.sidecar_sha256(suffix))


@dataclass
class Outcome:
    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


# -- promote ----------------------------------------------------------------------------------


def promote(settings: Settings, spec: str, src: str, dst: str, operator: str) -> Outcome:
    """Copy every file of a release from ``src`` to ``dst``, hashes verified."""
    project, version = parse_spec(spec)
    src, dst = _check_repo(settings, src), _check_repo(settings, dst)
    if src == dst:
        raise BadRequest("--from and --to name the same repository")
    tree = Tree.of(settings)
    outcome = Outcome()
    with locked(tree, project):
        records: Records = {(r, project): load_record(tree, r, project) for r in settings.repos}
        source, target = records[(src, project)], records[(dst, project)]
        names = _release_files(source, version)
        if not names:
            raise NotFound(f"No files of {project}=={version} in {src}")
        for name in names:
            rec = source.files[name]
            path = tree.project_dir(src, project) / name
            if not path.exists() or sha256_file(path) != rec.sha256:
                raise VerifyFailed(f"{src}/{project}/{name} is missing or differs from its "
                                   "recorded sha256; run verify")
            there = target.files.get(name)
            if there and there.sha256 == rec.sha256:
                outcome.skipped.append(name)
                continue
            if there or name in target.tombstones:
                raise FileExists(f"File already exists: {dst}/{project}/{name} with other "
                                 "contents (or removed); nothing promoted")
        copies = []
        for name in names:
            if name in outcome.skipped:
                continue
            rec = source.files[name]
            folder = tree.project_dir(src, project)
            copies.append(Copy(name, folder / name,
                               folder / f"{name}.metadata" if rec.metadata_sha256 else None,
                               rec,
                               AuditEntry(utc_timestamp(), operator, "promote", {
                                   "repo": dst, "from": src, "project": project,
                                   "filename": name, "sha256": rec.sha256, "size": rec.size}),
                               rec.sha256, _sidecars(folder, name, rec)))
            outcome.copied.append(name)
        if copies:
            _publish_copies(settings, tree, project, dst, records, copies, promoted_from=src)
    return outcome


# -- yank, unyank, remove --------------------------------------------------------------------


def _repos_holding(settings: Settings, tree: Tree, project: NormalizedName, version: Version,
                   repo: str | None) -> list[RepoName]:
    repos = [_check_repo(settings, repo)] if repo else list(settings.repos)
    return [r for r in repos if _release_files(load_record(tree, r, project), version)]


def yank(settings: Settings, spec: str, reason: str | None, repo: str | None, operator: str,
         undo: bool = False) -> list[str]:
    """PEP 592: mark (or unmark) every file of a release as yanked; returns the files."""
    project, version = parse_spec(spec)
    tree = Tree.of(settings)
    changed = []
    with locked(tree, project):
        holders = _repos_holding(settings, tree, project, version, repo)
        if not holders:
            raise NotFound(f"No files of {project}=={version}"
                           f"{' in ' + repo if repo else ''}")
        for r in holders:
            records: Records = {}
            record = records[(r, project)] = load_record(tree, r, project)
            for name in _release_files(record, version):
                record.files[name] = replace(record.files[name],
                                             yanked=False if undo else (reason or True))
                changed.append(f"{r}/{project}/{name}")
                append_audit(tree, AuditEntry(utc_timestamp(), operator,
                                              "unyank" if undo else "yank", {
                                                  "repo": r, "project": project,
                                                  "filename": name, "reason": reason}))
            Writer().write(tree.record_path(r, project), record.dump())
            _rebuild(settings, tree, project, r, records)
    return changed


def remove(settings: Settings, spec: str, repo: str, operator: str, force: bool = False,
           filename: str | None = None, reason: str | None = None) -> list[str]:
    """Delete a release (or one file of it) from ``repo``, leaving tombstones: the names
    are never published again. A repo others fall back to needs ``force``."""
    project, version = parse_spec(spec)
    repo = _check_repo(settings, repo)
    if len(settings.dependents(repo)) > 1 and not force:
        raise Forbidden(f"{repo} is a repository others fall back to; removing from it needs "
                        "--force (consider yank instead)")
    tree = Tree.of(settings)
    with locked(tree, project):
        records: Records = {}
        record = records[(repo, project)] = load_record(tree, repo, project)
        names = _release_files(record, version)
        if filename:
            if filename not in names:
                raise NotFound(f"{filename!r} is not a file of {project}=={version} in {repo}")
            names = [filename]
        if not names:
            raise NotFound(f"No files of {project}=={version} in {repo}")
        folder = tree.project_dir(repo, project)
        writer = Writer()
        for name in names:
            old = record.files.pop(name)
            record.tombstones[name] = Tombstone(old.sha256, utc_timestamp(),
                                                reason or "removed", operator)
            writer.remove(folder / name)
            for suffix in (".metadata", *SIDECARS):
                writer.remove(folder / f"{name}{suffix}")
            append_audit(tree, AuditEntry(utc_timestamp(), operator, "remove", {
                "repo": repo, "project": project, "filename": name, "sha256": old.sha256,
                "reason": reason}))
        writer.write(tree.record_path(repo, project), record.dump())
        _rebuild(settings, tree, project, repo, records)
    return [f"{repo}/{project}/{n}" for n in names]


# -- pin -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pin:
    project: NormalizedName
    version: Version
    hashes: frozenset[str]
    where: str  # "requirements.txt:12"


def parse_requirements(path: Path) -> list[Pin]:
    """pip's hash-pinned format: ``name==version --hash=sha256:… [--hash=…]``, one a line
    (backslash continuations, comments). Anything not pinned and hashed is an error."""
    pins: list[Pin] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        start = i + 1
        line = lines[i]
        while line.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line.rstrip()[:-1] + " " + lines[i]
        i += 1
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path.name}:{start}"
        if line.startswith("-"):
            raise BadRequest(f"{where}: options are not supported here: {line.split()[0]}")
        words = line.split()
        spec, options = words[0], words[1:]
        project, version = parse_spec(spec, where)
        hashes = set()
        for opt in options:
            key, _, value = opt.partition("=")
            algo, _, digest = value.partition(":")
            if key != "--hash" or algo != "sha256" or len(digest) != 64:
                raise BadRequest(f"{where}: {opt!r}: only --hash=sha256:<64 hex> is taken")
            hashes.add(digest.lower())
        if not hashes:
            raise BadRequest(f"{where}: {spec!r} has no --hash=sha256:…")
        pins.append(Pin(project, version, frozenset(hashes), where))
    return pins


def parse_pylock(path: Path) -> list[Pin]:
    """PEP 751 ``pylock.toml``, validated by packaging: every package with a version and
    sha256 hashes."""
    import tomllib

    from packaging.pylock import PackageSdist, PackageWheel, Pylock, PylockValidationError

    try:
        lock = Pylock.from_dict(tomllib.loads(path.read_text()))
    except (tomllib.TOMLDecodeError, PylockValidationError) as exc:
        raise BadRequest(f"{path.name}: not a valid pylock.toml: {exc}") from None
    pins = []
    for n, pkg in enumerate(lock.packages, 1):
        where = f"{path.name}: packages[{n}]"
        if pkg.version is None:
            raise BadRequest(f"{where}: {pkg.name} has no version")
        files: list[PackageWheel | PackageSdist] = [*(pkg.wheels or ()),
                                                     *([pkg.sdist] if pkg.sdist else [])]
        hashes = {f.hashes.get("sha256", "").lower() for f in files} - {""}
        if not hashes:
            raise BadRequest(f"{where}: {pkg.name} has no sha256 hashes")
        project, version = parse_spec(f"{pkg.name}=={pkg.version}", where)
        pins.append(Pin(project, version, frozenset(hashes), where))
    return pins


Progress = Callable[[int, int, str], None]


def pin(settings: Settings, pins: list[Pin], repo: str, operator: str,
        progress: Progress | None = None) -> Outcome:
    """Copy each pinned file (by its hash) into ``repo``: from a local repo if one holds it,
    else through the upstream cache; kept for good, whatever the upstream does later."""
    repo = _check_repo(settings, repo)
    tree = Tree.of(settings)
    upstream = mirror.make_upstream(settings)
    outcome = Outcome()
    for n, item in enumerate(pins, 1):
        if progress:
            progress(n, len(pins), f"{item.project}=={item.version}")
        with locked(tree, item.project):
            records: Records = {(r, item.project): load_record(tree, r, item.project)
                                for r in settings.repos}
            target = records[(repo, item.project)]
            wanted = set(item.hashes)
            for name, rec in target.files.items():
                if rec.sha256 in wanted:
                    wanted.discard(rec.sha256)
                    outcome.skipped.append(f"{item.project}/{name}")
            copies = []
            for digest in sorted(wanted):
                name, src, rec, sidecars = _find_pinned(settings, tree, upstream, item, digest,
                                                        records)
                if name in target.files or name in target.tombstones:
                    raise FileExists(f"{item.where}: {repo}/{item.project}/{name} exists with "
                                     "other contents (or was removed)")
                copies.append(Copy(name, src, None, rec,
                                   AuditEntry(utc_timestamp(), operator, "pin", {
                                       "repo": repo, "project": item.project,
                                       "filename": name, "sha256": digest, "size": rec.size}),
                                   digest, sidecars))
            try:
                if copies:
                    _publish_copies(settings, tree, item.project, repo, records, copies,
                                    pinned=True)
            except VerifyFailed as exc:
                raise VerifyFailed(f"{item.where}: {exc}") from None
            outcome.copied += [f"{item.project}/{c.name}" for c in copies]
    return outcome


def _find_pinned(settings: Settings, tree: Tree, upstream: Upstream, item: Pin,
                 digest: str, records: Records
                 ) -> tuple[str, Path, FileRecord, tuple[tuple[str, Path], ...]]:
    """The pinned file: from a local repo, else from the upstream (through the cache, with
    its PEP 740 provenance when the upstream lists one). Pinning is an operator's choice by
    hash: the release-age policy does not hold it back."""
    for (r, _), record in records.items():
        for name, rec in record.files.items():
            if rec.sha256 == digest:
                folder = tree.project_dir(r, item.project)
                return name, folder / name, rec, _sidecars(folder, name, rec)
    if mirror.is_claimed(settings, item.project):
        raise NotFound(f"{item.where}: {item.project} is a local (claimed) name and no local "
                       f"file has sha256 {digest}")
    listing = mirror.get_listing(settings, upstream, item.project)
    for f in listing.files if listing.found else ():
        if f.sha256 == digest:
            if parse_dist_filename(f.filename).version != item.version:
                raise BadRequest(f"{item.where}: the file with that hash is {f.filename}, "
                                 f"not version {item.version}")
            fetched = mirror.fetch_file(settings, upstream, item.project, f.filename,
                                        cooldown=False)
            rec = FileRecord(sha256=digest, size=fetched.path.stat().st_size,
                             version=str(item.version), upload_time=utc_timestamp(),
                             requires_python=f.requires_python,
                             upstream_upload_time=f.upload_time, source=f.url)
            sidecars: tuple[tuple[str, Path], ...] = ()
            if f.provenance:
                prov = mirror.fetch_provenance(settings, upstream, item.project, f.filename,
                                               cooldown=False).path
                rec = replace(rec,
                              provenance_sha256=hashlib.sha256(prov.read_bytes()).hexdigest())
                sidecars = ((mirror.PROVENANCE_SUFFIX, prov),)
            return f.filename, fetched.path, rec, sidecars
    raise NotFound(f"{item.where}: no file of {item.project}=={item.version} with sha256 "
                   f"{digest} locally or upstream")


# -- verify and audit ----------------------------------------------------------------------------


def verify(settings: Settings, repos: Iterable[str] | None = None,
           progress: Progress | None = None) -> tuple[int, list[str]]:
    """Rehash every published file against its record. Returns (files checked, problems);
    never changes anything."""
    tree = Tree.of(settings)
    problems: list[str] = []
    checked = 0
    for name in repos or settings.repos:
        repo = _check_repo(settings, name)
        folder = tree.state / "records" / repo
        records = sorted(folder.glob("*.json")) if folder.is_dir() else []
        for i, path in enumerate(records, 1):
            project = NormalizedName(path.name[:-5])
            if progress:
                progress(i, len(records), f"{repo}/{project}")
            record = load_record(tree, repo, project)
            for name, rec in sorted(record.files.items()):
                checked += 1
                file = tree.project_dir(repo, project) / name
                where = f"{repo}/{project}/{name}"
                if not file.exists():
                    problems.append(f"missing: {where}")
                elif sha256_file(file) != rec.sha256:
                    problems.append(f"sha256 mismatch: {where} (recorded {rec.sha256})")
                meta = file.with_name(name + ".metadata")
                if rec.metadata_sha256 and (
                        not meta.exists() or sha256_file(meta) != rec.metadata_sha256):
                    problems.append(f"metadata missing or changed: {where}.metadata")
                for suffix in SIDECARS:  # provenance, attestations
                    side = file.with_name(name + suffix)
                    expected = rec.sidecar_sha256(suffix)
                    if expected and (not side.exists() or sha256_file(side) != expected):
                        problems.append(f"{suffix[1:]} missing or changed: {where}{suffix}")
    return checked, problems


def read_audit(settings: Settings, project: str | None = None, user: str | None = None,
               since: str | None = None) -> Iterator[AuditEntry]:
    path = Tree.of(settings).audit_log
    if not path.exists():
        return
    wanted = parse_project_name(project, "argument") if project else None
    for n, line in enumerate(read_lines(path), 1):
        try:
            entry = AuditEntry.from_json(json.loads(line))
        except ValueError:
            entry = None
        if entry is None:
            print(f"audit: line {n} is not JSON; skipped", file=sys.stderr)
            continue
        if wanted and entry.project != wanted:
            continue
        if user and entry.user != user:
            continue
        if since and entry.time < since:
            continue
        yield entry


# -- PEP 792 project status ------------------------------------------------------------------


def set_status(settings: Settings, name: str, status: str, reason: str | None,
               repo: str | None, operator: str) -> list[RepoName]:
    """Mark a local project ``archived``, ``quarantined`` or ``deprecated`` (with a reason),
    or ``active`` again, in ``repo`` or in every repo holding it; returns those repos.
    Listings say it (PEP 792); archived and quarantined projects take no uploads and a
    quarantined one offers no files."""
    if status not in PROJECT_STATUSES:
        raise BadRequest(f"{status!r} is not a project status (one of "
                         f"{', '.join(PROJECT_STATUSES)})")
    project = parse_project_name(name, "argument")
    if repo:
        repo = _check_repo(settings, repo)
    tree = Tree.of(settings)
    changed: list[RepoName] = []
    with locked(tree, project):
        for r in [repo] if repo else list(settings.repos):
            records: Records = {}
            record = records[(r, project)] = load_record(tree, r, project)
            if not record.files:
                continue
            previous = record.status.to_json() if record.status else record.extra.get("status")
            record.extra.pop("status", None)
            if status == "active" and not reason:
                record.status = None
            else:
                record.status = StatusRecord(status, reason or None, operator, utc_timestamp())
            append_audit(tree, AuditEntry(utc_timestamp(), operator, "status", {
                "repo": r, "project": project, "status": status, "reason": reason,
                "previous": previous}))
            Writer().write(tree.record_path(r, project), record.dump())
            _rebuild(settings, tree, project, r, records)
            changed.append(r)
    if not changed:
        raise NotFound(f"No files of {project!r}{' in ' + repo if repo else ''}: a status is "
                       "set on a project published here")
    return changed
