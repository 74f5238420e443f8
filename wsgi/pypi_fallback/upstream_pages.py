"""Cache mode and overlays: keeping the upstream listings cached in the state folder fresh,
and the pages under ``+upstream`` Apache serves from them (written here, rendered by
``render``), beside the cache itself (``mirror``)."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from . import mirror
from .config import Settings
from .errors import NotFound, UpstreamError
from .listing import TYPE_MAP
from .names import NormalizedName, is_normalized_name, parse_project_name
from .records import UpstreamListing
from .render import render_upstream_listing
from .scan import Report
from .storage import (
    UPSTREAM_DIR,
    FolderWriter,
    Tree,
    Writer,
    describe_os_error,
    locked,
    regular_bytes,
    utc_timestamp,
    write_listing,
)
from .upstream import Upstream


def refresh_upstream_listings(settings: Settings, names: Sequence[str], report: Report,
                              force: bool = False) -> set[NormalizedName]:
    """Fetch again the cached upstream listings that are stale (all of ``names`` when
    forced); rewrite the cache-mode pages under ``+upstream``. Returns what changed."""
    tree = Tree.of(settings)
    if names:
        wanted = sorted({parse_project_name(n, "argument") for n in names})
    else:
        wanted = [NormalizedName(n) for n in mirror.cached_projects(tree)]
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
            publish_upstream_page(settings, project, Writer())
    return changed


_revalidating = [threading.Lock() for _ in range(64)]


def revalidation_lock(project: NormalizedName) -> threading.Lock:
    """One revalidation of a project's upstream listing at a time in this process."""
    return _revalidating[hash(project) % len(_revalidating)]


def revalidate_cached_page(settings: Settings, upstream: Upstream,
                           project: NormalizedName) -> None:
    """Cache mode (``+cache``): the upstream's listing of ``project`` revalidated (fetched
    if stale), its page under ``+upstream`` rewritten if it changed; NotFound when the
    upstream does not know the name. The listing's copy and the page are published
    together, before the answer (Apache serves the page; the file requests that follow
    read the copy). It is stamped fresh just after (``stamper``): the answer does not
    wait for that, and until the stamps are there a request for the page comes here again
    and finds the listing fresh (no upstream request)."""
    writer = FolderWriter()  # the listing fetched and its page: made durable together
    try:
        with revalidation_lock(project):
            listing = mirror.get_listing(settings, upstream, project, writer=writer)
            if not listing.found:
                raise NotFound(f"{project!r} is not on the upstream")
            with locked(Tree.of(settings), f"+fetch-{project}"):
                publish_upstream_page(settings, project, writer, listing)
                writer.flush()
    finally:
        writer.discard()
    stamper.request(settings, listing)


class Stamper:
    """Freshness stamps (``mirror.stamp_fresh``) written by a thread of their own (started
    once: a request never waits for a thread to start), one project after the other, with
    the time of the request that asked for them; a newer request for a project replaces one
    still waiting. Lost stamps (a crash, a full disk) only cost a revalidation of the cached
    listing (conditional, at most once a request)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: dict[tuple[Path, NormalizedName],
                            tuple[Settings, UpstreamListing, float]] = {}
        self._busy = False
        self._thread: threading.Thread | None = None

    def request(self, settings: Settings, listing: UpstreamListing) -> None:
        with self._cond:
            self._waiting[settings.state, listing.project] = (settings, listing, time.time())
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="pypi-fallback-stamps",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._busy = False
                self._cond.notify_all()  # for wait()
                while not self._waiting:
                    self._cond.wait()
                settings, listing, now = self._waiting.pop(next(iter(self._waiting)))
                self._busy = True
            try:
                mirror.stamp_fresh(settings, listing, now)
            except OSError as exc:
                print(f"pypi-fallback: freshness stamps of {listing.project!r} not written: "
                      f"{describe_os_error(exc)}", file=sys.stderr)

    def wait(self, seconds: float) -> bool:
        """Whether every stamp asked for is written within ``seconds`` (for tests)."""
        deadline = time.monotonic() + seconds
        with self._cond:
            while self._waiting or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True


stamper = Stamper()


def publish_upstream_page(settings: Settings, project: NormalizedName, writer: Writer,
                          listing: UpstreamListing | None = None) -> bool:
    """Cache mode: the listing under ``+upstream`` Apache serves for a project no local repo
    holds, with links through this server, the files the release-age policy admits now and
    what the upstream says of the project (PEP 708, 792), from its cached upstream listing
    (read from the state folder unless given). Returns whether it was (re)written: an
    unchanged listing is left alone."""
    if settings.fallback_mode != "cache":
        return False
    if listing is None:
        listing = mirror.load_listing(Tree.of(settings), project)
    if listing is None or not listing.found:
        return False
    admitted = mirror.admitted_upstream(settings, project, listing=listing)
    folder = Tree.of(settings).upstream_dir(project)
    page = render_upstream_listing(project, admitted, listing.versions)
    body, html = page.body, page.html
    with contextlib.suppress(OSError):  # unchanged: left as it is (its validators too)
        if regular_bytes(os.path.join(folder, "index.v1_json")) == body and \
                regular_bytes(os.path.join(folder, "index.html")) == html and \
                regular_bytes(os.path.join(folder, "index.var")) == TYPE_MAP:
            return False
    write_listing(writer, settings.root, folder, body, html, TYPE_MAP)
    if admitted.exceptions and page.offers_files:
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
                if publish_upstream_page(settings, project, Writer()):
                    changed += 1
        except (OSError, ValueError) as exc:
            report.skipped(f"{UPSTREAM_DIR}/{project}", exc)
    report.listings += changed
    return changed
