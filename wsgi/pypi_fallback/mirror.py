"""What pypi-fallback keeps of the upstream: cached listings (stale-if-error), the
dependency-confusion rule, and the pull-through file cache of ``fallback.mode = "cache"``.

Network calls go through ``upstream.Upstream``; files go through ``storage``.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from .config import Settings
from .errors import Forbidden, NotFound
from .listing import FileEntry
from .names import NormalizedName, parse_dist_filename
from .storage import (
    UPSTREAM_DIR,
    Tree,
    Writer,
    append_audit,
    load_claims,
    locked,
    new_file,
    utc_timestamp,
)
from .upstream import Upstream, UpstreamError, UpstreamListing, upstream_url


def make_upstream(settings: Settings) -> Upstream:
    return Upstream(upstream_url(settings.upstream_url), settings.upstream_timeout)


# -- cached listings -----------------------------------------------------------------------------


def listing_path(tree: Tree, project: str) -> Path:
    return tree.state / "upstream" / f"{project}.json"


def load_listing(tree: Tree, project: str) -> UpstreamListing | None:
    try:
        return UpstreamListing.from_json(json.loads(listing_path(tree, project).read_bytes()))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def store_listing(tree: Tree, listing: UpstreamListing) -> None:
    Writer().write(listing_path(tree, listing.project),
                   json.dumps(listing.to_json(), sort_keys=True).encode())


def is_fresh(settings: Settings, listing: UpstreamListing | None) -> bool:
    return listing is not None and time.time() - listing.fetched < settings.upstream_ttl


def get_listing(settings: Settings, upstream: Upstream, project: NormalizedName, *,
                store: bool = True) -> UpstreamListing:
    """The upstream's page for ``project``: the cached copy while fresh, else fetched
    (conditionally); on an upstream failure, the last good copy (stale-if-error)."""
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
    if store:
        store_listing(tree, listing)
    return listing


def is_claimed(settings: Settings, project: str) -> bool:
    """Claimed and private names never reach the upstream."""
    return settings.is_private(project) or project in load_claims(Tree.of(settings))


# -- the dependency-confusion rule at upload time ------------------------------------------


@dataclass(frozen=True)
class NameDecision:
    claim: str | None  # the reason to claim the name, None for an overlay
    listing: UpstreamListing | None = None


def decide_new_name(settings: Settings, upstream: Upstream, project: NormalizedName
                    ) -> NameDecision:
    """For a name about to be published here for the first time: claim it, allow it as an
    overlay, or refuse it (a public name that is not in ``policy.overlay``)."""
    if settings.is_private(project):
        return NameDecision("private (policy.private)")
    try:
        listing = get_listing(settings, upstream, project, store=False)
    except UpstreamError as exc:
        if settings.is_overlay(project):
            return NameDecision(None)
        return NameDecision(f"upstream could not be asked ({exc}); claimed to fail safe")
    if not listing.found:
        return NameDecision(None if settings.is_overlay(project) else "unknown upstream")
    if settings.is_overlay(project):
        return NameDecision(None, listing)
    raise Forbidden(f"{project!r} is a public project on the upstream; to publish it here, "
                    f"add it to policy.overlay in {settings.source}")


# -- overlay and cache-mode listings ------------------------------------------------------------


def upstream_entries(settings: Settings, project: str) -> list[FileEntry]:
    """The cached upstream files of ``project``, as listed on a page at
    ``<prefix>/<repo or +upstream>/<project>/``: in cache mode links go through this server."""
    listing = load_listing(Tree.of(settings), project)
    if listing is None or not listing.found:
        return []
    entries = []
    for f in listing.files:
        url = f.url if settings.fallback_mode != "cache" else \
            f"../../{UPSTREAM_DIR}/{project}/{f.filename}"
        entries.append(FileEntry(f.filename, url, f.sha256, f.size, f.version, f.upload_time,
                                 f.requires_python, None if settings.fallback_mode == "cache"
                                 else f.metadata_sha256, f.yanked))
    return entries


def tracks(settings: Settings, project: str) -> list[str]:
    """PEP 708: an overlay listing tracks the upstream's project."""
    return [make_upstream(settings).project_url(project)]


# -- the pull-through file cache -----------------------------------------------------------------


@dataclass(frozen=True)
class Fetched:
    path: Path
    downloaded: bool  # False: it was in the cache already


def fetch_file(settings: Settings, upstream: Upstream, project: NormalizedName,
               filename: str, client: str | None = None) -> Fetched:
    """A listed upstream file, into ``<root>/+upstream/<project>/``: downloaded once (under
    a lock), published only if its size and sha256 match the listing."""
    dist = parse_dist_filename(filename)
    if dist.project != project:
        raise NotFound(f"{filename!r} is not a file of {project!r}")
    if is_claimed(settings, project):
        raise NotFound(f"{project!r} is not looked up upstream")
    tree = Tree.of(settings)
    folder = settings.root / UPSTREAM_DIR / project
    final = folder / filename
    with locked(tree, f"+fetch-{project}"):
        if final.exists():
            return Fetched(final, False)
        listing = get_listing(settings, upstream, project)
        entry = listing.file(filename) if listing.found else None
        if entry is None:
            raise NotFound(f"{filename!r} is not in the upstream's listing of {project!r}")
        folder.mkdir(parents=True, exist_ok=True)
        with new_file(final) as out:
            sha256, size = upstream.fetch_file(entry, out, settings.max_upload_bytes * 20)
        try:
            append_audit(tree, {"time": utc_timestamp(), "user": None, "action": "cache",
                                "repo": UPSTREAM_DIR, "project": project,
                                "filename": filename, "sha256": sha256, "size": size,
                                "client": client, "url": entry.url})
        except BaseException:
            with contextlib.suppress(OSError):
                Writer().remove(final)  # not kept without its audit line
            raise
        return Fetched(final, True)
