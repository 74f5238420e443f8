"""The upstream index: the one module that talks to it.

PEP 691 JSON is asked for first and PEP 503 HTML accepted; both become the same
``FileEntry`` records. Every call has connect/read timeouts, a size cap and a redirect
cap; bodies are read raw (``Accept-Encoding: identity``, and a response with any
Content-Encoding is refused), so what is stored is what was listed.

A slow or hostile upstream cannot hold a caller: a listing (and every response's status
line and headers) has a true total deadline, enforced by a watchdog that shuts the socket
down, so a server sending one byte a second is cut off in time; a file body has no total
deadline but must keep a minimum rate over each window, so a large file on a slow link
still arrives while a stalled one fails. Failures are remembered for a short while (the
next caller fails at once instead of waiting again), and at most ``max_concurrent``
requests run at once per client: the others are refused at once (503).

Connections are kept alive and reused (a small pool per scheme, host and port): a
connection goes back to the pool only when its answer was read to the end in time, and a
reused connection that the upstream closed meanwhile is replaced once, at once (a GET may
be sent again). ``http.client`` plus this pool is kept over urllib3: the watchdog needs
the socket of the request in flight, and urllib3's timeouts are per read, not a total.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import heapq
import http.client
import itertools
import json
import os
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import IO, Any
from urllib.parse import quote, urljoin, urlsplit

from .errors import InvalidFilename, UpstreamBusy, UpstreamError, UpstreamTimeout
from .names import NormalizedName, canonicalize_name, parse_dist_filename
from .records import FileEntry, ProjectMeta, UpstreamListing

ACCEPT = ("application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
          "text/html;q=0.01")
MAX_LISTING_BYTES = 64 * 1024 * 1024
MAX_REDIRECTS = 5
CHUNK = 256 * 1024
USER_AGENT = "pypi-fallback"
MIN_RATE = 16 * 1024  # bytes a second a file body must average over each window
NEGATIVE_TTL = 15.0  # seconds a failure is remembered
MAX_CONCURRENT = 8  # upstream requests at once, per client (per daemon process)
MAX_IDLE_SECONDS = 30.0  # a pooled connection unused for longer is closed, not reused
DRAIN_BYTES = 64 * 1024  # an unread body up to this size is read so its connection is kept


class _Deadlines:
    """The watchdogs' deadlines, fired by one thread per process (a timer thread per
    request would make each request wait for a new thread to start: milliseconds on a
    busy machine). Cancelled ones are dropped when they come up, or all at once when
    they are most of what is waiting."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Watchdog]] = []
        self._count = itertools.count()
        self._cancelled = 0
        self._thread: threading.Thread | None = None

    def add(self, when: float, dog: _Watchdog) -> None:
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._count), dog))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="pypi-fallback-deadlines")
                self._thread.start()
            self._cond.notify()

    def cancelled(self) -> None:
        with self._cond:
            self._cancelled += 1
            if self._cancelled > 64 and self._cancelled * 2 > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].done]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._heap and self._heap[0][2].done:
                        heapq.heappop(self._heap)
                        self._cancelled = max(0, self._cancelled - 1)
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        dog = heapq.heappop(self._heap)[2]
                        dog.done = True
                        break
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
            dog._expire()


_deadlines = _Deadlines()


class _Watchdog:
    """Shuts a connection's socket down at a deadline, whatever the connection is doing
    (connecting, sending, reading headers one byte at a time)."""

    def __init__(self, conn: http.client.HTTPConnection, seconds: float) -> None:
        self.conn, self.expired, self.done = conn, False, False
        _deadlines.add(time.monotonic() + max(0.0, seconds), self)

    def _expire(self) -> None:
        self.expired = True
        sock = self.conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        if not self.done:
            self.done = True
            _deadlines.cancelled()


# -- parsing: two formats, one record --------------------------------------------------------


def _hash_of(value: Any) -> str | None:
    if isinstance(value, Mapping):
        sha = value.get("sha256")
        return sha.lower() if isinstance(sha, str) and len(sha) == 64 else None
    return None


def _checked(project: str, filename: str, url: str, **kw: Any) -> FileEntry | None:
    """A file entry, or None when its name is unsafe, of another project, or its URL is
    not plain http(s)."""
    try:
        dist = parse_dist_filename(filename)
    except InvalidFilename:
        return None
    parts = urlsplit(url)
    if dist.project != project or parts.scheme not in ("http", "https") or "@" in parts.netloc:
        return None
    return FileEntry(filename=filename, url=url, version=str(dist.version), **kw)


_STATUSES = ("active", "archived", "quarantined", "deprecated")  # PEP 792


def _urls(value: Any, page_url: str) -> tuple[str, ...]:
    """PEP 708 URL lists: http(s) URLs only, resolved against the page."""
    if not isinstance(value, list):
        return ()
    urls = (urljoin(page_url, v) for v in value[:20] if isinstance(v, str) and len(v) < 2000)
    return tuple(u for u in urls if urlsplit(u).scheme in ("http", "https"))


def _status(status: Any, reason: Any) -> tuple[str | None, str | None]:
    if status not in _STATUSES:
        return None, None
    return status, reason[:1000] if isinstance(reason, str) and reason else None


def parse_json_listing(project: str, body: bytes, page_url: str) -> list[FileEntry]:
    return parse_json_page(project, body, page_url)[0]


def parse_json_page(project: str, body: bytes, page_url: str
                    ) -> tuple[list[FileEntry], ProjectMeta]:
    """A PEP 691 project page: its files, and what it says of the project (PEP 708, 792)."""
    try:
        data = json.loads(body)
        entries = data["files"]
        if not isinstance(entries, list):
            raise TypeError("files is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise UpstreamError(f"Malformed JSON listing from upstream for {project!r}: {exc}") \
            from None
    meta = data.get("meta") if isinstance(data.get("meta"), Mapping) else {}
    state = data.get("project-status") if isinstance(data.get("project-status"), Mapping) \
        else {}
    status, reason = _status(state.get("status"), state.get("reason"))
    project_meta = ProjectMeta(status, reason, _urls(meta.get("tracks"), page_url),
                               _urls(data.get("alternate-locations"), page_url))
    files = []
    for entry in entries:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("filename"), str) \
                or not isinstance(entry.get("url"), str):
            continue
        meta = entry.get("core-metadata", entry.get("dist-info-metadata"))
        yanked = entry.get("yanked", False)
        rp = entry.get("requires-python")
        size = entry.get("size")
        upload_time = entry.get("upload-time")
        provenance = entry.get("provenance")
        record = _checked(
            project, entry["filename"], urljoin(page_url, entry["url"]),
            sha256=_hash_of(entry.get("hashes")),
            requires_python=rp if isinstance(rp, str) else None,
            yanked=yanked if isinstance(yanked, (bool, str)) else False,
            metadata_sha256=_hash_of(meta),
            size=size if isinstance(size, int) and not isinstance(size, bool) else None,
            upload_time=upload_time if isinstance(upload_time, str) else None,
            provenance=_provenance_url(provenance, page_url),
        )
        if record:
            files.append(record)
    return files, project_meta


def _provenance_url(value: Any, page_url: str) -> str | None:
    if not isinstance(value, str) or not value or len(value) > 2000:
        return None
    url = urljoin(page_url, value)
    parts = urlsplit(url)
    return url if parts.scheme in ("http", "https") and "@" not in parts.netloc else None


def parse_json_versions(body: bytes) -> tuple[str, ...]:
    """PEP 700's ``versions`` of a JSON listing, kept as given (strings only; none when
    absent or malformed: the files' versions then stand in)."""
    try:
        versions = json.loads(body).get("versions")
    except (ValueError, AttributeError):
        return ()
    if not isinstance(versions, list) or len(versions) > 100_000:
        return ()
    return tuple(v for v in versions if isinstance(v, str) and 0 < len(v) <= 200)


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self.metas: list[tuple[str, str]] = []
        self._open: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._open, self._text = dict(attrs), []
        elif tag == "meta" and len(self.metas) < 100:
            values = dict(attrs)
            name, content = values.get("name"), values.get("content")
            if name and name.startswith("pypi:") and content is not None:
                self.metas.append((name, content))

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.anchors.append((self._open, "".join(self._text).strip()))
            self._open = None


def _fragment_hash(fragment: str, name: str) -> str | None:
    key, _, value = fragment.partition("=")
    return value.lower() if key == name and len(value) == 64 else None


def parse_html_listing(project: str, body: bytes, page_url: str) -> list[FileEntry]:
    return parse_html_page(project, body, page_url)[0]


def parse_html_page(project: str, body: bytes, page_url: str
                    ) -> tuple[list[FileEntry], ProjectMeta]:
    """A PEP 503 project page: its links, and its ``pypi:`` meta tags (PEP 708, 792)."""
    parser = _Anchors()
    try:
        parser.feed(body.decode("utf-8"))
        parser.close()
    except (UnicodeDecodeError, AssertionError) as exc:
        raise UpstreamError(f"Malformed HTML listing from upstream for {project!r}: {exc}") \
            from None
    files = []
    for attrs, text in parser.anchors:
        href = attrs.get("href")
        if not href:
            continue
        url = urljoin(page_url, href)
        base, _, fragment = url.partition("#")
        filename = urlsplit(base).path.rsplit("/", 1)[-1] or text
        yanked_attr = attrs.get("data-yanked")
        meta = attrs.get("data-core-metadata", attrs.get("data-dist-info-metadata"))
        record = _checked(
            project, filename, base,
            sha256=_fragment_hash(fragment, "sha256"),
            requires_python=attrs.get("data-requires-python"),
            yanked=(yanked_attr or True) if yanked_attr is not None else False,
            metadata_sha256=_fragment_hash(meta, "sha256") if meta else None,
            provenance=_provenance_url(attrs.get("data-provenance"), page_url),
        )
        if record:
            files.append(record)
    metas: dict[str, list[str]] = {}
    for name, content in parser.metas:
        metas.setdefault(name, []).append(content)
    status, reason = _status(next(iter(metas.get("pypi:project-status", [])), None),
                             next(iter(metas.get("pypi:project-status-reason", [])), None))
    return files, ProjectMeta(status, reason, _urls(metas.get("pypi:tracks"), page_url),
                              _urls(metas.get("pypi:alternate-locations"), page_url))


# -- HTTP ---------------------------------------------------------------------------------------


@dataclass
class _Response:
    status: int
    headers: http.client.HTTPMessage
    url: str
    conn: http.client.HTTPConnection
    resp: http.client.HTTPResponse
    watchdog: _Watchdog
    release: Any = None  # gives back the client's slot when closed
    reuse: Any = None  # takes the connection back into the pool when closed

    def keep_rate(self) -> None:
        """From now on the body needs no total deadline, only a minimum rate."""
        self.watchdog.cancel()

    def iter_body(self, cap: int, min_rate: float = 0, window: float = 30.0
                  ) -> Iterator[bytes]:
        """The body, raw. With ``min_rate``, fail when fewer than ``min_rate * window``
        bytes came in any window (a stalled or dripping body); the total deadline (unless
        ``keep_rate`` was called) and the read timeout hold as well."""
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise UpstreamError(f"Upstream sent Content-Encoding {encoding!r} for {self.url}")
        declared = self.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > cap:
            raise UpstreamError(f"Upstream answer too large ({declared} bytes) for {self.url}")
        total = 0
        window_start, window_bytes = time.monotonic(), 0
        while True:
            try:
                block = self.resp.read1(CHUNK) if hasattr(self.resp, "read1") else \
                    self.resp.read(CHUNK)
            except TimeoutError:
                raise UpstreamTimeout(f"Upstream timed out reading {self.url}") from None
            except (http.client.HTTPException, OSError) as exc:
                if self.watchdog.expired:
                    raise UpstreamTimeout(f"Upstream too slow: {self.url}") from None
                raise UpstreamError(f"Upstream broke off {self.url}: {exc}") from None
            if self.watchdog.expired:
                raise UpstreamTimeout(f"Upstream too slow: {self.url}")
            if not block:
                break
            total += len(block)
            if total > cap:
                raise UpstreamError(f"Upstream answer too large (over {cap} bytes): {self.url}")
            window_bytes += len(block)
            now = time.monotonic()
            if min_rate and now - window_start >= window:
                if window_bytes < min_rate * (now - window_start):
                    raise UpstreamTimeout(
                        f"Upstream too slow: {window_bytes} bytes in {now - window_start:.0f} "
                        f"s (under {min_rate / 1024:.0f} KB/s) from {self.url}")
                window_start, window_bytes = now, 0
            yield block
        if declared and declared.isdigit() and total != int(declared):
            raise UpstreamError(f"Upstream answer truncated: {total} of {declared} bytes "
                                f"from {self.url}")

    def read(self, cap: int) -> bytes:
        return b"".join(self.iter_body(cap))

    def _reusable(self) -> bool:
        """Whether the connection can carry another request: the answer was read to its
        end (or what is left of it is short and read now), in time, and the server keeps
        it open."""
        if self.watchdog.expired or self.resp.will_close:
            return False
        if not self.resp.isclosed():
            # what is left of a body of known length (none left for one read to its last
            # byte by ``read1``, which does not mark the response closed then)
            left = self.resp.length
            if left is None or left > DRAIN_BYTES:
                return False
            try:
                self.resp.read()
            except (OSError, http.client.HTTPException):
                return False
        return self.resp.isclosed() and not self.watchdog.expired

    def close(self) -> None:
        self.watchdog.cancel()
        if self.reuse is not None and self._reusable():
            self.reuse(self.conn)
        else:
            self.conn.close()
        self.reuse = None
        if self.release is not None:
            self.release()
            self.release = None


def project_url(base_url: str, project: str) -> str:
    """A project's page at the index ``base_url``; the name is quoted (names are validated
    long before, but a URL is built from it here, and nothing it holds may change the
    request)."""
    base = base_url if base_url.endswith("/") else base_url + "/"
    return f"{base}{quote(project, safe='')}/"


class Upstream:
    """A client for one upstream index (shared by the threads of a process)."""

    def __init__(self, base_url: str, timeout: float, *, max_concurrent: int = MAX_CONCURRENT,
                 negative_ttl: float = NEGATIVE_TTL, min_rate: float = MIN_RATE) -> None:
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.timeout = timeout
        self.total = timeout * 3  # a listing, or any response's status line and headers
        self.min_rate = min_rate
        self.negative_ttl = negative_ttl
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._failures: dict[str, tuple[float, UpstreamError]] = {}
        self._lock = threading.Lock()
        self._max_idle = max_concurrent
        self._idle: dict[tuple[str, str, int | None], list[tuple[float,
                                                                 http.client.HTTPConnection]]] = {}
        self.connections = 0  # opened so far (a figure for tests and benchmarks)

    def project_url(self, project: str) -> str:
        return project_url(self.base_url, project)

    # -- failures remembered briefly: by host (unreachable, timed out) and by URL

    def _recall(self, url: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in (urlsplit(url).netloc, url):
                failed = self._failures.get(key)
                if failed and now - failed[0] < self.negative_ttl:
                    exc = failed[1]
                    raise type(exc)(f"{exc} ({now - failed[0]:.0f} s ago; not asked again "
                                    f"for {self.negative_ttl:.0f} s)")

    def _remember(self, url: str, exc: UpstreamError) -> None:
        host_wide = isinstance(exc, UpstreamTimeout) or "unreachable" in str(exc)
        with self._lock:
            if len(self._failures) > 10_000:
                self._failures.clear()
            self._failures[urlsplit(url).netloc if host_wide else url] = (time.monotonic(), exc)

    # -- the pool of kept-alive connections

    def _pooled(self, key: tuple[str, str, int | None]) -> http.client.HTTPConnection | None:
        """An idle connection to ``key`` that still looks open (none waiting to be read:
        a readable idle socket means the server closed it or sent something unasked)."""
        now = time.monotonic()
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                since, conn = idle.pop()
            sock = conn.sock
            try:
                readable = sock is None or bool(select.select([sock], [], [], 0)[0])
            except (OSError, ValueError):
                readable = True
            if now - since < MAX_IDLE_SECONDS and not readable:
                return conn
            conn.close()

    def _give_back(self, key: tuple[str, str, int | None],
                   conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self._max_idle:
                idle.append((time.monotonic(), conn))
                return
        conn.close()

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for _, conn in conns:
                conn.close()

    def _connect(self, scheme: str, host: str, port: int | None, timeout: float
                 ) -> http.client.HTTPConnection:
        self.connections += 1
        if scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=timeout,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def _open(self, url: str, headers: Mapping[str, str], deadline: float) -> _Response:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamError(f"Not an http(s) URL: {url!r}")
        key = (parts.scheme, parts.hostname, parts.port)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        for attempt in (1, 2):
            timeout = max(0.1, min(self.timeout, deadline - time.monotonic()))
            conn = self._pooled(key) if attempt == 1 else None
            reused = conn is not None
            if conn is None:
                conn = self._connect(parts.scheme, parts.hostname, parts.port, timeout)
            else:
                conn.timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
            watchdog = _Watchdog(conn, deadline - time.monotonic())
            try:
                conn.request("GET", path, headers={"User-Agent": USER_AGENT,
                                                   "Accept-Encoding": "identity", **headers})
                resp = conn.getresponse()
            except TimeoutError:
                watchdog.cancel()
                conn.close()
                raise UpstreamTimeout(f"Upstream timed out: {url}") from None
            except (OSError, http.client.HTTPException) as exc:
                watchdog.cancel()
                conn.close()
                if watchdog.expired:
                    raise UpstreamTimeout(f"Upstream timed out (no answer in {self.total:.0f} "
                                          f"s): {url}") from None
                if reused:  # the upstream closed a kept-alive connection: one new try
                    continue
                raise UpstreamError(f"Upstream unreachable: {url}: {exc}") from None
            return _Response(resp.status, resp.headers, url, conn, resp, watchdog,
                             reuse=functools.partial(self._give_back, key))
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, url: str, headers: Mapping[str, str] | None = None, wait: float = 0.2
            ) -> _Response:
        """GET following at most MAX_REDIRECTS redirects (http/https only). The response
        holds one of the client's slots until it is closed; with every slot taken, wait
        ``wait`` seconds for one, then UpstreamBusy."""
        self._recall(url)
        if not self._slots.acquire(timeout=wait):
            raise UpstreamBusy("Too many requests to the upstream at once; try again shortly")
        try:
            resp = self._follow(url, headers or {})
        except UpstreamError as exc:
            self._slots.release()
            if not isinstance(exc, UpstreamBusy):
                self._remember(url, exc)
            raise
        except BaseException:
            self._slots.release()
            raise
        if resp.status >= 500:
            self._remember(url, UpstreamError(f"Upstream answered {resp.status} for {url}"))
        resp.release = self._slots.release
        return resp

    def _follow(self, url: str, headers: Mapping[str, str]) -> _Response:
        deadline = time.monotonic() + self.total
        for _ in range(MAX_REDIRECTS + 1):
            resp = self._open(url, headers, deadline)
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.headers.get("Location", "")
                resp.close()
                if not location:
                    raise UpstreamError(f"Upstream redirect without Location: {url}")
                url = urljoin(url, location)
                continue
            return resp
        raise UpstreamError(f"Upstream redirected more than {MAX_REDIRECTS} times: {url}")

    def fetch_listing(self, project: NormalizedName, previous: UpstreamListing | None = None
                      ) -> UpstreamListing:
        """The project's page. ``found=False`` when the upstream does not know it."""
        url = self.project_url(project)
        headers = {"Accept": ACCEPT}
        if previous and previous.found and previous.etag:
            headers["If-None-Match"] = previous.etag
        if previous and previous.found and previous.last_modified:
            headers["If-Modified-Since"] = previous.last_modified
        resp = self.get(url, headers)
        try:
            final_segment = urlsplit(resp.url).path.rstrip("/").rsplit("/", 1)[-1]
            if canonicalize_name(final_segment) != project:
                raise UpstreamError(f"Upstream redirected {project!r} to another project: "
                                    f"{resp.url}")
            if resp.status == 304 and previous:
                return dataclasses.replace(previous, fetched=time.time())
            if resp.status == 404:
                return UpstreamListing(project, resp.url, False, fetched=time.time())
            if resp.status != 200:
                raise UpstreamError(f"Upstream answered {resp.status} for {url}")
            body = resp.read(MAX_LISTING_BYTES)
            ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
            versions: tuple[str, ...] = ()
            if ctype == "application/vnd.pypi.simple.v1+json":
                files, meta = parse_json_page(project, body, resp.url)
                versions = parse_json_versions(body)
            elif ctype in ("text/html", "application/vnd.pypi.simple.v1+html"):
                files, meta = parse_html_page(project, body, resp.url)
            else:
                raise UpstreamError(f"Upstream answered {ctype or 'no type'!r} for {url}")
            return UpstreamListing(project, resp.url, True, tuple(files), time.time(),
                                   resp.headers.get("ETag"), resp.headers.get("Last-Modified"),
                                   meta, versions=versions)
        finally:
            resp.close()

    def stream_file(self, entry: FileEntry, cap: int) -> Generator[bytes, None, None]:
        """A listed file's body, block by block as it arrives. The generator ends normally
        only when size and sha256 matched the listing: a caller that holds back the last
        block until then never passes on a complete-looking wrong file."""
        if not entry.sha256:
            raise UpstreamError(f"Upstream listing gives no sha256 for {entry.filename!r}")
        # an installer asks for many files at once: a file waits a while for a slot (the
        # others stream meanwhile) rather than failing at once
        resp = self.get(entry.url, wait=max(self.timeout, 5.0))
        digest, size = hashlib.sha256(), 0
        try:
            if resp.status != 200:
                raise UpstreamError(f"Upstream answered {resp.status} for {entry.filename!r}")
            resp.keep_rate()  # no total deadline for a body: a minimum rate instead
            limit = entry.size if entry.size is not None else cap
            try:
                for block in resp.iter_body(min(limit, cap), self.min_rate,
                                            max(3 * self.timeout, 5.0)):
                    digest.update(block)
                    size += len(block)
                    yield block
            except UpstreamError as exc:
                self._remember(entry.url, exc)
                raise
        finally:
            resp.close()
        if entry.size is not None and size != entry.size:
            raise UpstreamError(f"Upstream sent {size} bytes for {entry.filename!r}, listed "
                                f"{entry.size}")
        if digest.hexdigest() != entry.sha256:
            raise UpstreamError(f"Upstream sent other bytes for {entry.filename!r} "
                                "(sha256 differs from its listing)")

    def fetch_file(self, entry: FileEntry, out: IO[bytes], cap: int) -> tuple[str, int]:
        """Stream a listed file into ``out``; check its size and sha256 against the listing."""
        size = 0
        for block in self.stream_file(entry, cap):
            out.write(block)
            size += len(block)
        assert entry.sha256 is not None
        return entry.sha256, size

    def reachable(self) -> bool:
        """Whether the upstream answers now (a failure remembered counts as no; raises
        UpstreamBusy when every slot is taken, which says nothing either way)."""
        try:
            resp = self.get(self.base_url, {"Accept": ACCEPT})
            resp.close()
            return resp.status < 500
        except UpstreamBusy:
            raise
        except UpstreamError:
            return False


def pip_index_url() -> str:
    """The index pip on this machine uses: $PIP_INDEX_URL, pip's config, else pip's default."""
    if os.environ.get("PIP_INDEX_URL"):
        return os.environ["PIP_INDEX_URL"].split()[0]
    try:
        python = os.path.join(sys.prefix, "bin", "python")  # not sys.executable: mod_wsgi
        out = subprocess.run([python, "-m", "pip", "config", "list"],
                             capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key in ("global.index-url", "install.index-url", "download.index-url"):
            return value.strip().strip("'\"")
    from pip._internal.models.index import PyPI  # pip's own default, not written here

    return str(PyPI.simple_url)
