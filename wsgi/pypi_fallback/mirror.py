"""What pypi-fallback keeps of the upstream: cached listings (stale-if-error) and when
each is fresh, the dependency-confusion rule, and the whole-file download of the pull-through
cache (``fill`` streams cold files to clients on top of it).

Network calls go through ``upstream.Upstream``; files go through ``storage``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .config import Settings
from .errors import Forbidden, HeldBack, NotFound, UpstreamError, UpstreamUnavailable
from .listing import ProjectStatus
from .names import METADATA_SUFFIX, NormalizedName, companion_fits, parse_dist_filename
from .records import AuditEntry, FileEntry, UpstreamListing
from .render import Admitted
from .storage import (
    UPSTREAM_DIR,
    Tree,
    Writer,
    append_audit,
    is_claimed_here,
    load_claims,
    locked,
    new_file,
    touch_only,
    utc_timestamp,
)
from .upstream import Upstream, pip_index_url

# -- which upstream: resolved once, recorded, used by everyone ----------------------------------


def resolve_upstream_url(settings: Settings) -> str:
    """``upstream.url``, or when empty the index pip uses for whoever runs this."""
    return settings.upstream_url or pip_index_url()


def record_upstream_url(settings: Settings, url: str | None = None) -> str:
    """Record the upstream URL in the state folder (resolved now unless given): done by
    ``regen-rules``, which also writes it into Apache's rules. The app and every command
    then read the record, so that the rules, the app and the commands ask the same index
    whoever runs them."""
    url = url or resolve_upstream_url(settings)
    body = {"url": url, "configured": settings.upstream_url, "resolved": utc_timestamp()}
    tree = Tree.of(settings)
    Writer().write(tree.upstream_record, json.dumps(body, sort_keys=True).encode())
    return url


def resolved_upstream_url(settings: Settings) -> str:
    """The upstream URL in use: ``upstream.url`` when set; else the one recorded by
    ``regen-rules`` (recorded now, for everyone after, when nothing was recorded yet)."""
    if settings.upstream_url:
        return settings.upstream_url
    try:
        record = json.loads(Tree.of(settings).upstream_record.read_bytes())
        if record.get("configured") == "" and isinstance(record.get("url"), str) \
                and record["url"].startswith(("http://", "https://")):
            return str(record["url"])
    except (FileNotFoundError, ValueError, AttributeError):
        pass
    return record_upstream_url(settings)


def make_upstream(settings: Settings) -> Upstream:
    return Upstream(resolved_upstream_url(settings), settings.upstream_timeout)


# -- cached listings -----------------------------------------------------------------------------


def listing_path(tree: Tree, project: NormalizedName) -> Path:
    return tree.state / "upstream" / f"{project}.json"


def cached_projects(tree: Tree) -> list[str]:
    """The names with a cached upstream listing (not yet validated), sorted."""
    folder = tree.state / "upstream"
    return sorted(p.name[:-5] for p in folder.glob("*.json")) if folder.is_dir() else []


def load_listing(tree: Tree, project: NormalizedName) -> UpstreamListing | None:
    try:
        return UpstreamListing.from_json(json.loads(listing_path(tree, project).read_bytes()))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def store_listing(tree: Tree, listing: UpstreamListing, writer: Writer | None = None) -> None:
    (writer or Writer()).write(listing_path(tree, listing.project),
                               json.dumps(listing.to_json(), sort_keys=True).encode())


def is_fresh(settings: Settings, listing: UpstreamListing | None) -> bool:
    return listing is not None and time.time() - listing.fetched < settings.upstream_ttl


def get_listing(settings: Settings, upstream: Upstream, project: NormalizedName, *,
                store: bool = True, writer: Writer | None = None) -> UpstreamListing:
    """The upstream's page for ``project``: the cached copy while fresh, else fetched
    (conditionally) and stored (by ``writer`` when given); on an upstream failure, the
    last good copy (stale-if-error)."""
    tree = Tree.of(settings)
    cached = load_listing(tree, project)
    if is_fresh(settings, cached):
        assert cached is not None
        return cached
    try:
        listing = upstream.fetch_listing(project, cached)
    except UpstreamError:
        if cached is not None and cached.found:
            return cached
        raise
    if store and listing.found:  # a name the upstream does not know costs no state
        store_listing(tree, listing, writer)
    return listing


# -- freshness stamps: how Apache knows a listing on disk is still fresh ----------------------
#
# Apache serves cached (+upstream) and overlay listings from disk without Python, and its
# rules cannot compute a file's age. So the fill leaves empty stamp files named by the
# stretches of time (local time, as Apache's %{TIME} is) during which a listing is fresh,
# in ``<state>/fresh/<project>/``: ``YYYYMMDDHHMM`` for a whole minute, ``YYYYMMDDHHMMs``
# for ten seconds (``s`` the tens digit of the seconds) in the last, partial minute. A
# request at a time with no stamp goes to the app, which revalidates the listing
# (conditionally) and stamps it again; while the upstream fails, the stale copy is stamped
# for the current ten seconds only (stale-if-error; asked again after that). A listing
# fetched at t is thus served as it is until t + ttl + 10 s at the latest, and a refresh
# costs at most ttl / 60 + 6 names for one empty file.

FRESH_DIR = "fresh"
STAMP = ".stamp"  # in FRESH_DIR: the empty file every stamp is a hard link to (no new inode
# per stamp: a refresh writes a dozen, and on a busy ext4 each new inode costs ~0.5 ms CPU)
FRESH_SLACK = 10  # seconds a listing may be served past upstream.ttl


def fresh_dir(tree: Tree, project: NormalizedName) -> Path:
    return tree.state / FRESH_DIR / project


def fresh_stamps(until: float, now: float) -> list[str]:
    """The stamps that make a listing fresh from ``now`` to ``until`` (at least now)."""
    tm = time.localtime(now)
    start = int(now) - tm.tm_sec  # this minute's first second
    names = []
    while start + 60 <= until:
        names.append(time.strftime("%Y%m%d%H%M", time.localtime(start)))
        start += 60
    while start < until or not names:
        tm = time.localtime(start)
        if start + 10 > now:
            names.append(time.strftime("%Y%m%d%H%M", tm) + str(tm.tm_sec // 10))
        start += 10
    return names


def stamp_fresh(settings: Settings, listing: UpstreamListing, now: float | None = None
                ) -> list[str]:
    """Stamp the listing fresh until its age reaches ``upstream.ttl`` (at least for the
    current ten seconds); remove the project's other stamps. Returns the stamps."""
    now = time.time() if now is None else now
    names = fresh_stamps(listing.fetched + settings.upstream_ttl, now)
    tree = Tree.of(settings)
    touch_only(fresh_dir(tree, listing.project), names, tree.state / FRESH_DIR / STAMP)
    return names


def is_claimed(settings: Settings, project: NormalizedName) -> bool:
    """Claimed and private names never reach the upstream."""
    return settings.is_private(project) or is_claimed_here(Tree.of(settings), project)


# -- the dependency-confusion rule at upload time ------------------------------------------


@dataclass(frozen=True)
class NameDecision:
    claim: str | None  # the reason to claim the name (storage.CLAIM_REASONS), None: no claim
    listing: UpstreamListing | None = None  # an overlay's upstream listing, to keep
    upstream: str | None = None  # the upstream that was asked


def decide_new_name(settings: Settings, upstream: Upstream, project: NormalizedName
                    ) -> NameDecision:
    """For a name about to be published here for the first time: claim it, allow it as an
    overlay, or refuse it. A public name not in ``policy.overlay`` is refused (403); a name
    whose upstream status cannot be learned now is refused too (503): an outage must never
    turn a public name into a local claim that shadows it."""
    if settings.is_private(project):
        return NameDecision("private")
    try:
        listing = get_listing(settings, upstream, project, store=False)
    except UpstreamError as exc:
        if settings.is_overlay(project):
            return NameDecision(None, upstream=upstream.base_url)
        raise UpstreamUnavailable(
            f"{project!r} is new here and the upstream index could not be asked whether it is "
            f"a public project ({exc}); nothing was published, try again later") from None
    if not listing.found:
        return NameDecision(None if settings.is_overlay(project) else "unknown-upstream",
                            upstream=upstream.base_url)
    if settings.is_overlay(project):
        return NameDecision(None, listing, upstream.base_url)
    raise Forbidden(f"{project!r} is a public project on the upstream index; to publish it "
                    "here, an administrator must add it to policy.overlay in the server's "
                    "configuration")


def recheck_claims(settings: Settings, upstream: Upstream) -> list[str]:
    """Claims made while the upstream could not be asked (an earlier release's rule) that
    turn out to be public projects: one problem line each, what to do included. Changes
    nothing by itself. A failure to ask is a problem line too."""
    problems = []
    for project, reason in sorted(load_claims(Tree.of(settings)).items()):
        if reason != "unreachable" or settings.is_private(project):
            continue
        try:
            found = upstream.fetch_listing(project).found
        except UpstreamError as exc:
            problems.append(f"{project}: claimed while the upstream could not be asked, and "
                            f"it still cannot be ({exc}); run this again later")
            continue
        if found:
            problems.append(
                f"{project}: claimed while the upstream could not be asked, but it is a public "
                f"project on {upstream.base_url}; its local listings hide the public releases. "
                "If the local files are a build of that project, add it to policy.overlay; "
                "either way delete its line from claims.map (or claims.new.map) in the state "
                "folder (then run regen-index) to let it fall back upstream")
    return problems


# -- overlay and cache-mode listings ------------------------------------------------------------


def admitted_upstream(settings: Settings, project: NormalizedName,
                      now: float | None = None, listing: UpstreamListing | None = None
                      ) -> Admitted:
    """The cached upstream files of ``project`` (its cached listing, or ``listing`` when
    given), as listed on a page at ``<prefix>/<repo or +upstream>/<project>/``: only those
    old enough for the cooldown (``policy.min_age``, ``policy.freeze``) or covered by
    ``policy.exceptions``; in cache mode links (files and PEP 740 provenance) go through
    this server."""
    if listing is None:
        listing = load_listing(Tree.of(settings), project)
    if listing is None or not listing.found:
        return Admitted()
    now = time.time() if now is None else now
    cache = settings.fallback_mode == "cache"
    meta = listing.meta
    admitted = Admitted(
        status=ProjectStatus(meta.status, meta.status_reason) if meta.status else None,
        tracks=meta.tracks, alternate_locations=meta.alternate_locations)
    for f in listing.files:
        verdict = settings.cooldown.judge(project, f.version, f.upload_time, now)
        if not verdict.admitted:
            admitted.withheld += 1
            continue
        if verdict.exception:
            admitted.exceptions.append((f.filename, verdict.exception))
        url = f"../../{UPSTREAM_DIR}/{project}/{f.filename}" if cache else f.url
        # PEP 658/714, PEP 740: in cache mode the metadata and the provenance are fetched on
        # demand like the file, and not offered when the name kept beside it would be too long
        provenance = f.provenance if not cache else f"{url}.provenance" if f.provenance \
            and companion_fits(f.filename, ".provenance") else None
        metadata = f.metadata_sha256 if not cache or \
            companion_fits(f.filename, METADATA_SUFFIX) else None
        admitted.entries.append(replace(f, url=url, metadata_sha256=metadata,
                                        provenance=provenance))
    return admitted


def upstream_entries(settings: Settings, project: NormalizedName) -> list[FileEntry]:
    """The upstream files of ``project`` a listing here offers now (``admitted_upstream``)."""
    return admitted_upstream(settings, project).entries


def audit_exceptions(settings: Settings, repo: str, project: NormalizedName,
                     used: list[tuple[str, str]]) -> None:
    """A listing was written that offers files only a ``policy.exceptions`` entry lets
    through: one audit line each."""
    tree = Tree.of(settings)
    for filename, exception in used:
        append_audit(tree, AuditEntry(utc_timestamp(), None, "policy-exception", {
            "repo": repo, "project": project, "filename": filename, "exception": exception}))


def check_cooldown(settings: Settings, project: NormalizedName, entry: FileEntry) -> str | None:
    """Refuse (403, with the reason) an upstream file the release-age policy holds back;
    return the exception that lets it through, if one did."""
    verdict = settings.cooldown.judge(project, entry.version, entry.upload_time, time.time())
    if not verdict.admitted:
        raise HeldBack(f"{entry.filename!r} is held back by this index's release-age policy: "
                        f"{verdict.reason}")
    return verdict.exception


# -- the pull-through file cache -----------------------------------------------------------------


@dataclass(frozen=True)
class Fetched:
    path: Path
    downloaded: bool  # False: it was in the cache already


def file_lock(project: NormalizedName, filename: str) -> str:
    """One lock per cached file (a filename can be too long for a lock file's name)."""
    return f"+fetch-{project}-{hashlib.sha256(filename.encode()).hexdigest()[:24]}"


def cache_path(settings: Settings, project: NormalizedName, filename: str) -> Path:
    """Where a cached upstream file goes, ``<root>/+upstream/<project>/<filename>``, from a
    validated filename of that very project (never from an upstream URL); a claimed or
    private project is refused here, before anything reaches the upstream."""
    dist = parse_dist_filename(filename)
    if dist.project != project:
        raise NotFound(f"{filename!r} is not a file of {project!r}")
    if is_claimed(settings, project):
        raise NotFound(f"{project!r} is not looked up upstream")
    return Tree.of(settings).upstream_dir(project) / filename


def listed_file(settings: Settings, upstream: Upstream, project: NormalizedName,
                filename: str) -> FileEntry:
    """The upstream listing's entry for ``filename`` (404 when it lists no such file)."""
    listing = get_listing(settings, upstream, project)
    entry = listing.file(filename) if listing.found else None
    if entry is None:
        raise NotFound(f"{filename!r} is not in the upstream's listing of {project!r}")
    return entry


def fetch_file(settings: Settings, upstream: Upstream, project: NormalizedName,
               filename: str, client: str | None = None, *, cooldown: bool = True) -> Fetched:
    """A listed upstream file, into ``<root>/+upstream/<project>/``: downloaded once (under
    a lock), published only if its size and sha256 match the listing. With ``cooldown``
    (not for ``pin``, an operator's explicit choice by hash), a file the release-age
    policy holds back is refused."""
    final = cache_path(settings, project, filename)
    tree = Tree.of(settings)
    with locked(tree, file_lock(project, filename)):
        if final.exists():
            return Fetched(final, False)
        entry = listed_file(settings, upstream, project, filename)
        exception = check_cooldown(settings, project, entry) if cooldown else None
        with new_file(final) as out:
            sha256, size = upstream.fetch_file(entry, out, settings.max_upload_bytes * 20)
        try:
            fields = {"repo": UPSTREAM_DIR, "project": project, "filename": filename,
                      "sha256": sha256, "size": size, "client": client, "url": entry.url}
            if exception:
                fields["policy_exception"] = exception
            append_audit(tree, AuditEntry(utc_timestamp(), None, "cache", fields))
        except BaseException:
            with contextlib.suppress(OSError):
                Writer().remove(final)  # not kept without its audit line
            raise
        return Fetched(final, True)


# -- PEP 740 provenance, cached beside the file ------------------------------------------------

PROVENANCE_SUFFIX = ".provenance"
MAX_PROVENANCE_BYTES = 1024 * 1024


def check_provenance(body: bytes, what: str) -> None:
    """A PEP 740 provenance object, in shape (its signatures are the client's to verify)."""
    try:
        data = json.loads(body)
        ok = isinstance(data, dict) and data.get("version") == 1 and \
            isinstance(data.get("attestation_bundles"), list)
    except ValueError:
        ok = False
    if not ok:
        raise UpstreamError(f"Upstream sent no PEP 740 provenance object for {what}")


def fetch_provenance(settings: Settings, upstream: Upstream, project: NormalizedName,
                     filename: str, client: str | None = None, *, cooldown: bool = True
                     ) -> Fetched:
    """The upstream's PEP 740 provenance of a listed file, from the URL its listing gives
    (and nowhere else), into ``<root>/+upstream/<project>/<filename>.provenance``."""
    dist = parse_dist_filename(filename)
    if dist.project != project:
        raise NotFound(f"{filename!r} is not a file of {project!r}")
    if is_claimed(settings, project):
        raise NotFound(f"{project!r} is not looked up upstream")
    tree = Tree.of(settings)
    final = Tree.of(settings).upstream_dir(project) / f"{filename}{PROVENANCE_SUFFIX}"
    with locked(tree, f"+fetch-{project}"):
        if final.exists():
            return Fetched(final, False)
        listing = get_listing(settings, upstream, project)
        entry = listing.file(filename) if listing.found else None
        if entry is None or not entry.provenance:
            raise NotFound(f"The upstream lists no provenance for {filename!r}")
        if cooldown:
            check_cooldown(settings, project, entry)
        resp = upstream.get(entry.provenance, {"Accept": "application/json"})
        try:
            if resp.status != 200:
                raise UpstreamError(f"Upstream answered {resp.status} for the provenance of "
                                    f"{filename!r}")
            body = resp.read(MAX_PROVENANCE_BYTES)
        finally:
            resp.close()
        check_provenance(body, repr(filename))
        with new_file(final) as out:
            out.write(body)
        try:
            append_audit(tree, AuditEntry(utc_timestamp(), None, "cache-provenance", {
                "repo": UPSTREAM_DIR, "project": project, "filename": filename,
                "sha256": hashlib.sha256(body).hexdigest(), "client": client,
                "url": entry.provenance}))
        except BaseException:
            with contextlib.suppress(OSError):
                Writer().remove(final)
            raise
        return Fetched(final, True)
