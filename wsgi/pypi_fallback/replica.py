"""A read replica's distributions and ``.metadata``: one request to the primary per file.

The replica's drop-in (``regen-rules --replica-of``) serves a file Apache finds in the
replica's folder as a plain static file; for any other GET of a distribution or metadata
file it hands the request to this app (a mod_wsgi daemon). The first request asks the
primary (under a per-file ``flock``, which holds across processes too); a thread of its own
then downloads the file at the primary's pace into a temporary file, published by rename
only once the whole body arrived, and every client of the file (the first included)
streams from that growing file: a slow client slows only itself, one that leaves stops
nothing, and no other request asks the primary meanwhile. A request that finds the file
published is handed back to Apache (an internal redirect), which serves it from disk.
Listings stay with mod_cache.

Only an answer the primary calls ``public`` and ``immutable`` (a 200 with its length given)
is kept. Anything else (a fallback redirect, a 404, a 401, a ``private`` file of a
restricted repository, a HEAD) is passed through unchanged but for a Location that points
at the primary, which is made to point at the replica, and is never kept. A body that ends
short is never published, and its clients' transfers end short too. When the folder cannot
take the file (permissions, a full disk), the client still gets it and nothing is kept.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import os
import re
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlsplit

from . import storage

StartResponse = Callable[..., Any]

# What the drop-in routes here: <prefix>/<repo>/<project>/<file>, file one of these.
FILE_SUFFIXES = (".whl", ".zip", ".tar.gz", ".metadata")
# One path segment: no dotfile (temporary files, locks), nothing Apache would not map.
SEGMENT_RE = r"[A-Za-z0-9_][A-Za-z0-9._+!~-]*"
_SEGMENT = re.compile(SEGMENT_RE)
# The drop-in's pattern of such a path (after the prefix), the same rule as parse_file_path.
# In cache mode the primary keeps the upstream index's files under <prefix>/+upstream/.
UPSTREAM = "+upstream"
FILE_RE = (f"(?:{SEGMENT_RE}|{re.escape(UPSTREAM)})/{SEGMENT_RE}/{SEGMENT_RE}\\."
           f"(?:{'|'.join(re.escape(s[1:]) for s in FILE_SUFFIXES)})")
# Headers of the primary's answer passed on to the client (hop-by-hop ones are not).
PASSED_HEADERS = ("Content-Type", "Content-Length", "Cache-Control", "ETag",
                  "Last-Modified", "Location", "WWW-Authenticate", "Retry-After",
                  "X-Content-Type-Options", "Vary", "Warning")
BLOCK = 256 * 1024
NAME_MAX = 255  # bytes in a file name (longer: ENAMETOOLONG)
LOCKS_DIR = ".locks"
# The drop-in's rewrite rule sets this; without it (a client asking the internal URL
# directly) the app answers 404.
ROUTE_FLAG = "PYPI_FALLBACK_REPLICA_FILL"
# Characters of a file's path sent as they are ("+": cache mode's +upstream, local versions).
_SAFE = "/+"


@dataclass(frozen=True)
class ReplicaSettings:
    primary: str  # http(s)://host[:port]/prefix/
    files: Path  # the replica's folder of distributions and metadata
    # seconds: the longest silence of the primary within an answer, and the longest wait
    # for a file's lock (a GET or HEAD, never an upload: short, so that a hung primary does
    # not hold clients for long)
    read_timeout: float = 60.0
    connect_timeout: float = 5.0
    # how many requests may stream a file another request started downloading (the daemon
    # keeps its other threads for other files)
    max_waiters: int = 24
    # the CA certificates an https primary's certificate is checked against (None: the
    # system's)
    ca_file: str | None = None

    @classmethod
    def from_environ(cls, environ: dict[str, Any]) -> ReplicaSettings:
        return cls(primary=environ["PYPI_FALLBACK_REPLICA_PRIMARY"],
                   files=Path(environ["PYPI_FALLBACK_REPLICA_FILES"]),
                   read_timeout=float(environ.get("PYPI_FALLBACK_REPLICA_READ_TIMEOUT", "60")),
                   connect_timeout=float(environ.get(
                       "PYPI_FALLBACK_REPLICA_CONNECT_TIMEOUT", "5")),
                   max_waiters=int(environ.get("PYPI_FALLBACK_REPLICA_MAX_WAITERS", "24")),
                   ca_file=environ.get("PYPI_FALLBACK_REPLICA_CA_FILE") or None)

    @property
    def prefix(self) -> str:
        return urlsplit(self.primary).path.rstrip("/")


def parse_file_path(path_info: str) -> tuple[str, str, str] | None:
    """``/<repo>/<project>/<file>`` of a distribution or metadata file, else None."""
    parts = path_info.strip("/").split("/")
    if len(parts) != 3 or not all(_SEGMENT.fullmatch(p) for p in parts[1:]):
        return None
    if not (_SEGMENT.fullmatch(parts[0]) or parts[0] == UPSTREAM):
        return None
    if any(len(p.encode()) > NAME_MAX for p in parts):  # no such file anywhere: a 404
        return None
    if not parts[2].endswith(FILE_SUFFIXES):
        return None
    return parts[0], parts[1], parts[2]


def storable(status: int, headers: http.client.HTTPMessage) -> bool:
    """Whether the primary's answer is a whole file any cache may keep for good."""
    directives = {d.strip().split("=")[0].lower()
                  for d in headers.get("Cache-Control", "").split(",")}
    return (status == 200 and "immutable" in directives and "public" in directives
            and not directives & {"private", "no-store", "no-cache"}
            and headers.get("Content-Length", "").isdigit()
            and not headers.get("Content-Encoding"))


def replica_location(location: str, settings: ReplicaSettings, environ: dict[str, Any]) -> str:
    """A Location pointing at the primary's prefix points at the replica's instead (what
    ProxyPassReverse does for the answers mod_proxy passes)."""
    primary = settings.primary.rstrip("/")
    if location == primary or location.startswith(primary + "/"):
        host = environ.get("HTTP_HOST") or environ["SERVER_NAME"]
        return f"{environ['wsgi.url_scheme']}://{host}{settings.prefix}" + \
            location[len(primary):]
    return location


def file_lock(settings: ReplicaSettings, relative: str) -> contextlib.AbstractContextManager[None]:
    """The per-file lock of ``relative`` (waited for at most ``settings.read_timeout``)."""
    name = hashlib.sha256(relative.encode()).hexdigest()
    return storage.lock_removed_after(settings.files / LOCKS_DIR / name, settings.read_timeout)


def ask_primary(settings: ReplicaSettings, method: str, relative: str,
                environ: dict[str, Any]) -> tuple[http.client.HTTPConnection,
                                                  http.client.HTTPResponse]:
    parts = urlsplit(settings.primary)
    assert parts.hostname is not None
    conn: http.client.HTTPConnection
    if parts.scheme == "https":  # the certificate and host name checked
        conn = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=settings.connect_timeout,
            context=ssl.create_default_context(cafile=settings.ca_file))
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port,
                                          timeout=settings.connect_timeout)
    headers = {"Accept-Encoding": "identity", "Connection": "close",
               "User-Agent": "pypi-fallback-replica"}
    if environ.get("HTTP_AUTHORIZATION"):
        headers["Authorization"] = environ["HTTP_AUTHORIZATION"]
    try:
        conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(settings.read_timeout)
        conn.request(method, f"{settings.prefix}/{quote(relative, safe=_SAFE)}", headers=headers)
        return conn, conn.getresponse()
    except BaseException:
        conn.close()
        raise


def _headers(resp: http.client.HTTPResponse, settings: ReplicaSettings,
             environ: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for name in PASSED_HEADERS:
        value = resp.getheader(name)
        if value is not None:
            if name == "Location":
                value = replica_location(value, settings, environ)
            out.append((name, value))
    return out


def _status(resp: http.client.HTTPResponse) -> str:
    return f"{resp.status} {' '.join(resp.reason.split()) or 'Unknown'}"


class Stream:
    """An answer's blocks, and what to release once the server is done with it: close(),
    which a WSGI server calls however the answer ended, even before its first block (when
    a generator's own ``finally`` would never run)."""

    def __init__(self, blocks: Iterator[bytes], release: Callable[[], None]) -> None:
        self._blocks = blocks
        self._release = [release]

    def __iter__(self) -> Iterator[bytes]:
        return self._blocks

    def also(self, release: Callable[[], None]) -> Stream:
        self._release.append(release)
        return self

    def close(self) -> None:
        try:
            close = getattr(self._blocks, "close", None)
            if close is not None:
                close()
        finally:
            while self._release:
                self._release.pop()()


def _blocks(resp: http.client.HTTPResponse) -> Iterator[bytes]:
    while block := resp.read(BLOCK):
        yield block


def _body(conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> Stream:
    return Stream(_blocks(resp), conn.close)


class Download:
    """One file on its way from the primary into a temporary file beside its final name,
    read by a thread of its own at the primary's pace: every client of the file, the first
    included, streams from that growing file (a descriptor of its own, so the rename at the
    end does not matter). Published (fsync, rename, fsync of the folder) only once exactly
    Content-Length bytes came; a short or oversized body publishes nothing and the clients'
    transfers end short. The per-file lock is held until it ends."""

    def __init__(self, key: str, conn: http.client.HTTPConnection,
                 resp: http.client.HTTPResponse, final: Path, tmp: Path, fd: int,
                 lock: contextlib.ExitStack, headers: list[tuple[str, str]]) -> None:
        self.key, self._conn, self._resp, self.final = key, conn, resp, final
        self._tmp, self._lock, self.headers = tmp, lock, headers
        self.size = int(resp.getheader("Content-Length", "0"))
        self._out: IO[bytes] | None = os.fdopen(fd, "wb", buffering=0)
        self.read_fd: int | None = os.open(tmp, os.O_RDONLY)
        self.written = 0
        self.failed = False
        self.done = False

    def run(self) -> None:
        published = False
        try:
            while self.written < self.size:
                # what has come (read would wait for the whole block)
                block = self._resp.read1(min(BLOCK, self.size - self.written))
                if not block:
                    raise OSError(f"the primary sent {self.written} of {self.size} bytes "
                                  f"for {self.final.name!r}")
                assert self._out is not None
                self._out.write(block)
                with _CHANGED:
                    self.written += len(block)
                    _CHANGED.notify_all()
            if self._resp.read(1):
                raise OSError(f"the primary sent more than {self.size} bytes")
            self._publish()
            published = True
        except Exception as exc:  # noqa: BLE001 (the thread's end: logged)
            print(f"pypi-fallback-replica: cannot keep {self.final}: {exc}", file=sys.stderr)
            with _CHANGED:
                self.failed = True
        finally:
            self._conn.close()
            if self._out is not None:
                with contextlib.suppress(OSError):
                    self._out.close()
            if not published:
                with contextlib.suppress(OSError):
                    storage.discard(self._tmp)
            with _CHANGED:
                self.done = True
                if _DOWNLOADS.get(self.key) is self:
                    del _DOWNLOADS[self.key]
                if self.read_fd is not None:
                    os.close(self.read_fd)
                    self.read_fd = None
                _CHANGED.notify_all()
            self._lock.close()

    def _publish(self) -> None:
        assert self._out is not None
        storage.finish_tmp(self._out)
        self._out = None
        mtime = None
        modified = self._resp.getheader("Last-Modified")
        if modified:
            with contextlib.suppress(TypeError, ValueError, OverflowError):
                mtime = parsedate_to_datetime(modified).timestamp()
        storage.replace_with(self._tmp, self.final, mtime)

    def reader(self, settings: ReplicaSettings) -> Stream | None:
        """The file's bytes as they arrive, for one more client (None once it ended)."""
        with _CHANGED:
            if self.read_fd is None or self.failed:
                return None
            fd = os.dup(self.read_fd)
        return Stream(self._stream(fd, settings), functools.partial(os.close, fd))

    def _stream(self, fd: int, settings: ReplicaSettings) -> Iterator[bytes]:
        sent = 0
        while sent < self.size:
            with _CHANGED:
                # bounded: the download's own reads time out after read_timeout
                deadline = time.monotonic() + settings.read_timeout + 5
                while self.written <= sent and not self.failed and not self.done:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise OSError(f"no progress on {self.final.name!r}")
                    _CHANGED.wait(left)
                if self.written <= sent:  # (what came before a failure is sent)
                    raise OSError(f"{self.final.name!r} ended short")
                available = self.written
            while sent < available:
                block = os.pread(fd, min(BLOCK, available - sent), sent)
                if not block:
                    raise OSError(f"{self.final.name!r} shrank")
                sent += len(block)
                if sent == self.size:
                    # the last block only once the file is published (or failed)
                    with _CHANGED:
                        while not self.done:
                            if not _CHANGED.wait(settings.read_timeout + 5):
                                raise OSError(f"{self.final.name!r} not published")
                        if self.failed:
                            raise OSError(f"{self.final.name!r} was not kept")
                yield block


# The downloads under way in this process, by relative path; _CHANGED guards them and
# wakes their readers. _WAITERS counts the requests that joined one, bounded by
# max_waiters so that the daemon keeps threads for other files.
_CHANGED = threading.Condition()
_DOWNLOADS: dict[str, Download | None] = {}  # None: being asked for
_WAITERS = [0]
# At most this many downloads at once (each a thread, going on when its clients left).
MAX_DOWNLOADS = 64


def _served_by_apache(settings: ReplicaSettings, relative: str, start_response: StartResponse
                      ) -> Iterable[bytes]:
    """mod_wsgi's daemon mode turns a 200 with a local Location into an internal redirect:
    Apache serves the file it now finds in the folder itself. (The path alone: a request
    in absolute form has the whole URL as its REQUEST_URI.)"""
    uri = f"{settings.prefix}/{quote(relative, safe=_SAFE)}"
    start_response("200 OK", [("Location", uri), ("Content-Type", "text/plain")])
    return [b""]


def _plain(start_response: StartResponse, status: str, text: str) -> Iterable[bytes]:
    body = text.encode() + b"\n"
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body))),
                            ("Cache-Control", "no-store")])
    return [body]


def serve_file(settings: ReplicaSettings, environ: dict[str, Any],
               start_response: StartResponse) -> Iterable[bytes]:
    method = environ["REQUEST_METHOD"]
    parsed = parse_file_path(environ.get("PATH_INFO", ""))
    if not environ.get(ROUTE_FLAG) or parsed is None or method not in ("GET", "HEAD"):
        return _plain(start_response, "404 Not Found", "Not Found")
    relative = "/".join(parsed)
    final = settings.files / relative
    if final.is_file():
        return _served_by_apache(settings, relative, start_response)
    if method == "HEAD":  # answered by the primary, nothing kept
        conn, resp = ask_primary(settings, method, relative, environ)
        start_response(_status(resp), _headers(resp, settings, environ))
        return _body(conn, resp)
    for _ in range(3):  # a download that ended (published or not) as this request came
        answer = _fill(settings, relative, final, environ, start_response)
        if answer is not None:
            return answer
    return _plain(start_response, "503 Service Unavailable", "Try again")


def _one_waiter_less() -> None:
    with _CHANGED:
        _WAITERS[0] -= 1


def _fill(settings: ReplicaSettings, relative: str, final: Path, environ: dict[str, Any],
          start_response: StartResponse) -> Iterable[bytes] | None:
    """Join the download of ``relative`` under way, or start it (None: try again)."""
    deadline = time.monotonic() + settings.connect_timeout + settings.read_timeout + 5
    with _CHANGED:
        while _DOWNLOADS.get(relative, False) is None:  # being asked for: wait
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"waited for the primary's answer for {relative!r}")
            _CHANGED.wait(left)
        download = _DOWNLOADS.get(relative)
        if download is None:
            if final.is_file():
                return _served_by_apache(settings, relative, start_response)
            if len(_DOWNLOADS) >= MAX_DOWNLOADS:
                return _busy(start_response)
            _DOWNLOADS[relative] = None  # this request asks the primary
        elif _WAITERS[0] >= settings.max_waiters:
            return _busy(start_response)
        else:
            _WAITERS[0] += 1
    if download is not None:  # joins it
        stream = download.reader(settings)
        if stream is None:
            with _CHANGED:
                _WAITERS[0] -= 1
            return None
        start_response("200 OK", download.headers)
        return stream.also(_one_waiter_less)
    lock = contextlib.ExitStack()
    started = False
    try:
        lock.enter_context(file_lock(settings, relative))
        if final.is_file():  # another process published it meanwhile
            return _served_by_apache(settings, relative, start_response)
        conn, resp = ask_primary(settings, "GET", relative, environ)
        headers = _headers(resp, settings, environ)
        if not storable(resp.status, resp.msg):  # the others ask the primary themselves
            start_response(_status(resp), headers)
            return _body(conn, resp)
        try:
            tmp, fd = storage.create_tmp(final)
        except OSError as exc:  # the client still gets the file; nothing is kept
            print(f"pypi-fallback-replica: cannot keep {final}: {exc}", file=sys.stderr)
            start_response(_status(resp), headers)
            return _body(conn, resp)
        try:
            download = Download(relative, conn, resp, final, tmp, fd, lock, headers)
        except BaseException:
            conn.close()
            storage.discard(tmp)
            raise
        stream = download.reader(settings)
        assert stream is not None
        with _CHANGED:
            _DOWNLOADS[relative] = download
            _CHANGED.notify_all()
        threading.Thread(target=download.run, name=f"replica-fill {relative}",
                         daemon=True).start()
        started = True
        start_response("200 OK", headers)
        return stream
    finally:
        if not started:
            lock.close()
            with _CHANGED:
                if _DOWNLOADS.get(relative, False) is None:
                    del _DOWNLOADS[relative]
                _CHANGED.notify_all()


def _busy(start_response: StartResponse) -> Iterable[bytes]:
    body = b"Too many files are being fetched from the primary; try again\n"
    start_response("503 Service Unavailable", [
        ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"), ("Retry-After", "5")])
    return [body]


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    settings = ReplicaSettings.from_environ(environ)
    try:
        return serve_file(settings, environ, start_response)
    except (OSError, http.client.HTTPException) as exc:  # the primary down or failing
        print(f"pypi-fallback-replica: {environ.get('REQUEST_URI')}: {exc}", file=sys.stderr)
        return _plain(start_response, "503 Service Unavailable",
                      "The primary could not be asked for this file")
