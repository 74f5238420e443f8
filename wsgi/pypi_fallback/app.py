"""The WSGI app: the one module that speaks HTTP to clients.

Apache serves every read from disk; this app takes uploads (the legacy API that
twine speaks), answers the health check, and in cache mode fills the upstream cache
(a listing or a file not on disk yet). Domain errors become HTTP answers in one
table, with the reason in the status line (twine prints it) and the body; a storage
failure is a 5xx (507 when the disk is full) after the temporary files are removed.
"""

from __future__ import annotations

import email.message
import errno
import functools
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from webob import Request, Response

from . import fill, mirror
from .auth import GroupFile, authorize_upload
from .config import IMMUTABLE, Settings, load_settings
from .errors import (
    BadRequest,
    ClaimsCorrupt,
    HeldBack,
    MethodNotAllowed,
    NotFound,
    PyPIFallbackError,
    StateCorrupt,
    TooLarge,
    UpstreamBusy,
    UpstreamUnavailable,
    status_of,
)
from .names import NormalizedName, RepoName, parse_normalized_name
from .pages import PageRefresher
from .policywatch import PolicyWatcher, Rerenderer
from .regen import refresh_overlay, refresh_roots
from .storage import UPSTREAM_DIR, Tree, describe_os_error
from .tokens import TokenStore, store_path
from .upload import check_form, check_form_body, publish_upload
from .upstream import Upstream
from .upstream_pages import revalidate_cached_page

# The environment variable that only the drop-in's rewrite rules set for the internal
# cache-mode routes; Apache renames it REDIRECT_… on the internal redirect to the app.
ROUTE_FLAG = "REDIRECT_PYPI_FALLBACK_ROUTE"


class AfterResponse:
    """A WSGI body that runs ``then`` when the server closes it (after sending it)."""

    def __init__(self, body: Iterable[bytes], then: Callable[[], None]) -> None:
        self.body, self.then = body, then

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.body)

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close:
                close()
        finally:
            self.then()


class RootRefresher:
    """Refreshes root listings after responses, at most once per interval per process.

    A root listing holds every project and no installer reads it, so a burst of new
    projects must not pay for one rewrite each: the first request rewrites it at once
    (after its response is sent), later ones within the interval are folded into one
    rewrite at the end of it. The new projects are folded into the listing as it is (no
    walk of the repository); ``regen-index`` rebuilds them from the disk.

    ``clock`` and ``later`` (run a function after some seconds) are the time it uses:
    ``time.monotonic`` and a daemon timer thread, or a test's own.
    """

    def __init__(self, settings: Settings, interval: float = 2.0,
                 clock: Callable[[], float] = time.monotonic,
                 later: Callable[[float, Callable[[], None]], None] | None = None) -> None:
        self.settings, self.interval = settings, interval
        self.clock, self.later = clock, later or _in_background
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._scheduled: set[str] = set()
        self._added: dict[str, set[NormalizedName]] = {}

    def request(self, repos: Iterable[RepoName], projects: Iterable[NormalizedName]) -> None:
        """The root listings of ``repos`` may now show ``projects``."""
        now_due = []
        with self._lock:
            for repo in repos:
                self._added.setdefault(repo, set()).update(projects)
                if repo in self._scheduled:
                    continue
                wait = self._last.get(repo, -1e9) + self.interval - self.clock()
                if wait <= 0:
                    self._last[repo] = self.clock()
                    now_due.append(repo)
                else:
                    self._scheduled.add(repo)
                    self.later(wait, functools.partial(self._run_later, repo))
        for repo in now_due:
            self._refresh(repo)

    def _run_later(self, repo: RepoName) -> None:
        with self._lock:
            self._scheduled.discard(repo)
            self._last[repo] = self.clock()
        self._refresh(repo)

    def _refresh(self, repo: RepoName) -> None:
        with self._lock:
            added = self._added.pop(repo, set())
        if added:
            refresh_roots(self.settings, [repo], added)


def _in_background(seconds: float, function: Callable[[], None]) -> None:
    timer = threading.Timer(seconds, function)
    timer.daemon = True
    timer.start()


def _boundary(request: Request) -> str | None:
    """The ``boundary`` parameter of the request's Content-Type, if a plain one."""
    header = email.message.Message()
    header["Content-Type"] = request.headers.get("Content-Type", "")[:1000]
    value = header.get_param("boundary")
    return value if isinstance(value, str) else None


class _LocalRedirect(Response):
    """A response whose Location stays the local path it was given (WebOb would make
    it absolute, which Apache would send to the client as a redirect)."""

    def _abs_headerlist(self, environ: dict[str, Any]) -> list[tuple[str, str]]:
        return list(self.headerlist)


def served_by_apache(path: str) -> Response:
    """Hand the request back to Apache, which serves ``path`` itself (with sendfile, its
    validators, negotiation and caching headers): mod_wsgi's daemon mode turns a 200 with
    a local Location into an internal redirect (a CGI local redirect, RFC 3875)."""
    resp = _LocalRedirect(status=200, content_type="text/plain", charset="utf-8")
    resp.headers["Location"] = path
    resp.text = f"{path}\n"
    return resp


def error_response(status: int, reason: str) -> Response:
    """A plain-text error whose reason is also the status line's phrase."""
    phrase = " ".join(reason.split())  # no CR/LF or tabs in a header
    phrase = phrase.encode("latin-1", "replace").decode("latin-1")[:300]
    resp = Response(status=f"{status} {phrase}", content_type="text/plain", charset="utf-8")
    resp.text = reason + "\n"
    if status == 401:
        resp.www_authenticate = ("Basic", {"realm": "pypi-fallback"})
    if status == 405:
        resp.allow = ("POST",)
    if status == 503:
        resp.retry_after = 10
    return resp


class App:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.groups = GroupFile(settings.htgroups)
        self.tokens = TokenStore(store_path(settings.state))
        self.roots = RootRefresher(settings)
        self.pages = PageRefresher(settings)
        self._upstream: Upstream | None = None
        self._reachable: tuple[float, bool] = (0.0, False)
        self._reachable_lock = threading.Lock()
        self._checking = False
        self.rerender = Rerenderer()
        self.policy = PolicyWatcher(settings, self._policy_changed)

    def _policy_changed(self, settings: Settings) -> None:
        """The release-age policy in the config changed: use it, and render the listings
        that hold upstream files again (in the background)."""
        self.rerender.request(settings)

    @property
    def upstream(self) -> Upstream:
        if self._upstream is None:
            self._upstream = mirror.make_upstream(self.settings)
        return self._upstream

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        self.settings = self.pages.settings = self.policy.current()
        try:
            try:
                response = self.route(request)
            except HeldBack:
                # the policy may have changed since it was last looked at (an exception
                # just added, which another process already shows in a listing): a
                # refusal looks at the config file first
                before = self.settings
                self.settings = self.pages.settings = self.policy.current(now=True)
                if self.settings is before:
                    raise
                response = self.route(request)
        except StateCorrupt as exc:
            print(f"pypi-fallback: {exc}", file=environ.get("wsgi.errors"))
            what = "claims map" if isinstance(exc, ClaimsCorrupt) else "records"
            response = error_response(500, f"The server's {what} is damaged; nothing was "
                                           "published (an administrator must see the error log)")
        except PyPIFallbackError as exc:
            response = error_response(status_of(exc), str(exc))
            if isinstance(exc, UpstreamUnavailable):
                response.retry_after = exc.retry_after
        except OSError as exc:
            # the sysadmin's view (path, user) goes to the error log, never to the client
            print(f"pypi-fallback: storage error: {describe_os_error(exc)}",
                  file=environ.get("wsgi.errors"))
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            response = error_response(507 if full else 500,
                                      f"Storage error: {exc.strerror or exc}; nothing was "
                                      "published (the server's error log says where)")
        response.cache_control = self.cache_control(request, response)
        return response(environ, start_response)

    def cache_control(self, request: Request, response: Response) -> str:
        """What a cache in front may keep: in cache mode, a file fetched for Apache is
        immutable and a listing is fresh as long as Apache's own; nothing else the app
        answers (uploads, health, errors) may be stored."""
        if response.status_code == 200:
            route = request.environ.get(ROUTE_FLAG)
            if route == "fetch":
                return IMMUTABLE
            if route == "cache":
                return self.settings.listing_cache_control
        return "no-store"

    def route(self, request: Request) -> Response:
        prefix = self.settings.url_prefix + "/"
        path = request.script_name + request.path_info
        if not path.startswith(prefix):
            raise NotFound(f"Not found: {path!r}")
        rest = path[len(prefix):].removeprefix("+app/")  # Apache mounts the app at +app
        if rest == "+health":
            if request.method not in ("GET", "HEAD"):
                raise MethodNotAllowed(f"Method {request.method} not allowed here")
            return self.health()
        if rest.startswith(("+cache/", "+fetch/", "+refresh/")):
            return self.cache(request, rest)
        repo_name = rest[:-1] if rest.endswith("/") else rest
        repo = self.settings.repo_named(repo_name)
        if repo is None:
            raise NotFound(f"No such repository: {repo_name!r}")
        if request.method != "POST":
            raise MethodNotAllowed(f"Method {request.method} not allowed here; upload with POST")
        return self.upload(request, repo)

    def upload(self, request: Request, repo_name: RepoName) -> Response:
        uploader = authorize_upload(self.settings, self.groups, self.tokens, request.environ,
                                    repo_name)
        if request.content_length is None:
            raise BadRequest("Content-Length required")
        if request.content_length > self.settings.max_request_bytes:
            raise TooLarge(f"Upload too large: over the limit of {self.settings.max_upload_mb} MB")
        request.make_body_seekable()
        check_form_body(request.content_type, _boundary(request), request.body_file_seekable)
        try:
            form = request.POST
        except (ValueError, LookupError, UnicodeError) as exc:
            raise BadRequest(f"Malformed multipart form: {exc}"[:200]) from None
        content = form.get("content")
        filename = getattr(content, "filename", None)
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        upload = check_form(fields, filename)
        body = getattr(content, "file", None)
        if body is None:
            raise BadRequest("Missing file in 'content'")
        project = upload.dist.project
        uploader.check_project(project, repo_name)
        outcome = publish_upload(self.settings, lambda: self.upstream, repo_name, upload, body,
                                 uploader.user, request.remote_addr, token=uploader.token)
        resp = Response(content_type="text/plain", charset="utf-8")
        if outcome.status == "exists":
            resp.text = f"{outcome.dist.filename} is already there with the same contents\n"
        else:
            resp.text = f"{outcome.dist.filename} uploaded to {repo_name}\n"
        if outcome.stale_roots:
            resp.app_iter = AfterResponse(resp.app_iter,
                                          lambda: self.roots.request(outcome.stale_roots,
                                                                     [project]))
        if outcome.status == "created" and self.settings.pages:  # pages for people (pages.py)
            resp.app_iter = AfterResponse(resp.app_iter, lambda: self.pages.request([project]))
        return resp

    def cache(self, request: Request, rest: str) -> Response:
        """The internal routes: in cache mode, a project page from the upstream's listing
        (``+cache``) or a file fetched once (``+fetch``); in any mode, a listing that merges
        the upstream's files revalidated when its freshness stamp ran out (``+refresh``).

        They answer only to a request that the drop-in's rewrite rules sent here (the route
        flag), +cache and +fetch only in cache mode, and check the names and the claims
        themselves before anything reaches the upstream."""
        kind, _, tail = rest.partition("/")
        if request.environ.get(ROUTE_FLAG) != kind.lstrip("+") or (
                kind != "+refresh" and self.settings.fallback_mode != "cache"):
            raise NotFound(f"Not found: {rest!r}")
        if request.method not in ("GET", "HEAD"):
            raise MethodNotAllowed(f"Method {request.method} not allowed here")
        if kind == "+refresh":
            return self.refresh(rest, tail)
        name, _, filename = tail.partition("/")
        project = parse_normalized_name(name, "name in the URL")
        if mirror.is_claimed(self.settings, project):
            raise NotFound(f"Not found: {name!r}")
        if kind == "+fetch" and filename.endswith(mirror.PROVENANCE_SUFFIX):  # PEP 740
            fetched = mirror.fetch_provenance(self.settings, self.upstream, project,
                                              filename[:-len(mirror.PROVENANCE_SUFFIX)],
                                              request.remote_addr)
            resp = Response(body=fetched.path.read_bytes(), content_type="application/json")
            return resp
        if kind == "+fetch":
            opened = fill.open_file(self.settings, self.upstream, project, filename,
                                    request.remote_addr)
            if isinstance(opened, mirror.Fetched):  # on disk now: Apache serves it
                return served_by_apache(
                    f"{self.settings.url_prefix}/{UPSTREAM_DIR}/{project}/{filename}")
            resp = Response(content_type="application/octet-stream")
            resp.app_iter = opened
            resp.content_length = opened.size
            if self.pages.has_page(project):  # now "cached from upstream"
                opened.on_published = lambda: self.pages.request([project])
            return resp
        if filename:
            raise NotFound(f"Not found: {rest!r}")
        revalidate_cached_page(self.settings, self.upstream, project)
        # Apache serves the page as it serves every cached page: negotiated, with its
        # validators and caching headers
        return served_by_apache(f"{self.settings.url_prefix}/{UPSTREAM_DIR}/{project}/")

    def refresh(self, rest: str, tail: str) -> Response:
        """A local listing that merges the upstream's files (an overlay), older than
        ``upstream.ttl``: the upstream's listing revalidated, the project's listings
        rebuilt when it changed, then served by Apache."""
        repo_name, _, name = tail.rstrip("/").partition("/")
        repo = self.settings.repo_named(repo_name)
        if repo is None or "/" in name:
            raise NotFound(f"Not found: {rest!r}")
        project = parse_normalized_name(name, "name in the URL")
        refresh_overlay(self.settings, lambda: self.upstream, repo, project)
        return served_by_apache(f"{self.settings.url_prefix}/{repo}/{project}/")

    def upstream_reachable(self) -> bool | None:
        """The last known answer (None before the first), never waited for: a check runs in
        the background when the answer is over a minute old, one at a time."""
        checked, answer = self._reachable
        with self._reachable_lock:
            stale = not checked or time.monotonic() - checked > 60
            if stale and not self._checking:
                self._checking = True
                threading.Thread(target=self._check_upstream, daemon=True).start()
        return answer if checked else None

    def _check_upstream(self) -> None:
        try:
            answer = self.upstream.reachable()
            self._reachable = (time.monotonic(), answer)
        except UpstreamBusy:
            pass  # the last answer stands; the next +health asks again
        finally:
            self._checking = False

    def health(self) -> Response:
        tree = Tree.of(self.settings)
        free = shutil.disk_usage(self.settings.root).free
        try:
            status = json.loads(tree.status_path.read_text())
        except (OSError, ValueError):
            status = {}
        body = {
            "ok": os.access(self.settings.root, os.W_OK) and os.access(self.settings.state,
                                                                      os.W_OK),
            "disk_free_bytes": free,
            "upstream_url": self.upstream.base_url,
            "upstream_reachable": self.upstream_reachable(),
            "last_regeneration": status.get("last_regeneration"),
        }
        resp = Response(json_body=body)
        resp.cache_control = "no-store"
        if not body["ok"]:
            resp.status = 503
        return resp


def make_app(settings: Settings) -> App:
    return App(settings)


_apps: dict[str, App] = {}
_apps_lock = threading.Lock()


def application(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """The mod_wsgi entry: builds the app for the config named by the request environment
    (``SetEnv PYPI_FALLBACK_CONFIG``) or the process environment, once, on first use."""
    path = environ.get("PYPI_FALLBACK_CONFIG") or os.environ.get("PYPI_FALLBACK_CONFIG") or ""
    app = _apps.get(path)
    if app is None:
        with _apps_lock:
            app = _apps.get(path)
            if app is None:
                try:
                    app = _apps[path] = make_app(load_settings(path or None))
                except PyPIFallbackError as exc:
                    print(f"pypi-fallback: {exc}", file=environ.get("wsgi.errors"))
                    resp = error_response(500, "pypi-fallback is misconfigured; see the error log")
                    return resp(environ, start_response)
    return app(environ, start_response)
