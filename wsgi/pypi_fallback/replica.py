"""A read replica's distributions and ``.metadata``: one request to the primary per file.

The replica's drop-in (``regen-rules --replica-of``) serves a file Apache finds in the
replica's folder as a plain static file; for any other GET of a distribution or metadata
file it hands the request to this app (a mod_wsgi daemon). Under a per-file lock (``flock``,
so it holds across the daemon's threads and processes), the first request asks the primary,
streams the answer to its client while writing it to a temporary file, and publishes the
file by rename only once the whole body arrived; the requests that came meanwhile wait for
the lock, find the file and are handed back to Apache (an internal redirect), which serves
it from disk. Listings stay with mod_cache.

Only an answer the primary calls ``public`` and ``immutable`` (a 200 with its length given)
is kept. Anything else (a fallback redirect, a 404, a 401, a ``private`` file of a
restricted repository, a HEAD) is passed through unchanged but for a Location that points
at the primary, which is made to point at the replica, and is never kept. A body that ends
short is never published, and its client's transfer ends short too. When the folder cannot
take the file (disk full, permissions), the client still gets it and nothing is kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import sys
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
FILE_RE = (f"{SEGMENT_RE}/{SEGMENT_RE}/{SEGMENT_RE}\\."
           f"(?:{'|'.join(re.escape(s[1:]) for s in FILE_SUFFIXES)})")
# Headers of the primary's answer passed on to the client (hop-by-hop ones are not).
PASSED_HEADERS = ("Content-Type", "Content-Length", "Cache-Control", "ETag",
                  "Last-Modified", "Location", "WWW-Authenticate", "Retry-After",
                  "X-Content-Type-Options", "Vary", "Warning")
BLOCK = 256 * 1024
LOCKS_DIR = ".locks"
# The drop-in's rewrite rule sets this; without it (a client asking the internal URL
# directly) the app answers 404.
ROUTE_FLAG = "PYPI_FALLBACK_REPLICA_FILL"


@dataclass(frozen=True)
class ReplicaSettings:
    primary: str  # http(s)://host[:port]/prefix/
    files: Path  # the replica's folder of distributions and metadata
    timeout: float  # seconds: each read of the primary's answer; the longest wait for a lock
    connect_timeout: float = 5.0

    @classmethod
    def from_environ(cls, environ: dict[str, Any]) -> ReplicaSettings:
        return cls(primary=environ["PYPI_FALLBACK_REPLICA_PRIMARY"],
                   files=Path(environ["PYPI_FALLBACK_REPLICA_FILES"]),
                   timeout=float(environ.get("PYPI_FALLBACK_REPLICA_TIMEOUT", "600")),
                   connect_timeout=float(environ.get(
                       "PYPI_FALLBACK_REPLICA_CONNECT_TIMEOUT", "5")))

    @property
    def prefix(self) -> str:
        return urlsplit(self.primary).path.rstrip("/")


def parse_file_path(path_info: str) -> tuple[str, str, str] | None:
    """``/<repo>/<project>/<file>`` of a distribution or metadata file, else None."""
    parts = path_info.strip("/").split("/")
    if len(parts) != 3 or not all(_SEGMENT.fullmatch(p) for p in parts):
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
    """The per-file lock of ``relative`` (waited for at most ``settings.timeout``)."""
    name = hashlib.sha256(relative.encode()).hexdigest()
    return storage.lock_removed_after(settings.files / LOCKS_DIR / name, settings.timeout)


def ask_primary(settings: ReplicaSettings, method: str, relative: str,
                environ: dict[str, Any]) -> tuple[http.client.HTTPConnection,
                                                  http.client.HTTPResponse]:
    parts = urlsplit(settings.primary)
    conn_type = (http.client.HTTPSConnection if parts.scheme == "https"
                 else http.client.HTTPConnection)
    assert parts.hostname is not None
    conn = conn_type(parts.hostname, parts.port, timeout=settings.connect_timeout)
    headers = {"Accept-Encoding": "identity", "Connection": "close",
               "User-Agent": "pypi-fallback-replica"}
    if environ.get("HTTP_AUTHORIZATION"):
        headers["Authorization"] = environ["HTTP_AUTHORIZATION"]
    try:
        conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(settings.timeout)
        conn.request(method, f"{settings.prefix}/{quote(relative)}", headers=headers)
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


def _body(conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> Iterator[bytes]:
    try:
        while block := resp.read(BLOCK):
            yield block
    finally:
        conn.close()


class Fill:
    """The primary's 200 for a cold file, streamed to the client and written to a temporary
    file beside its final name; published (fsync, rename, fsync of the folder) once exactly
    Content-Length bytes came, before the client gets its last block. A short body raises
    (the client's transfer ends short) and publishes nothing. A failure to write stops the
    writing, not the client's transfer. The lock is released however it ends."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse,
                 final: Path, lock: contextlib.ExitStack) -> None:
        self._conn, self._resp, self.final = conn, resp, final
        self._lock = lock
        self.size = int(resp.getheader("Content-Length", "0"))
        self._tmp = storage.tmp_path(final)
        self._out: IO[bytes] | None = None
        try:
            self._tmp, fd = storage.create_tmp(final)
            self._out = os.fdopen(fd, "wb")
        except OSError as exc:
            self._cannot_keep(exc)

    def _cannot_keep(self, exc: OSError) -> None:
        """Stop writing; the client still gets the file, and the requests waiting for it go
        on to ask the primary themselves at once."""
        print(f"pypi-fallback-replica: cannot keep {self.final}: {exc}", file=sys.stderr)
        if self._out is not None:
            with contextlib.suppress(OSError):
                self._out.close()
            self._out = None
        with contextlib.suppress(OSError):
            storage.discard(self._tmp)
        self._lock.close()

    def _write(self, block: bytes) -> None:
        if self._out is not None:
            try:
                self._out.write(block)
            except OSError as exc:
                self._cannot_keep(exc)

    def __iter__(self) -> Iterator[bytes]:
        try:
            received, held = 0, b""
            while block := self._resp.read(min(BLOCK, self.size - received) or 1):
                received += len(block)
                if received > self.size:
                    raise OSError(f"the primary sent more than {self.size} bytes")
                self._write(block)
                if held:
                    yield held
                held = block
                if received == self.size:
                    break
            if received != self.size:
                raise OSError(f"the primary sent {received} of {self.size} bytes for "
                              f"{self.final.name!r}")
            self._publish()
            if held:
                yield held
        finally:
            self.close()

    def _publish(self) -> None:
        if self._out is None:
            return
        try:
            storage.finish_tmp(self._out)
            self._out = None
            mtime = None
            modified = self._resp.getheader("Last-Modified")
            if modified:
                with contextlib.suppress(TypeError, ValueError, OverflowError):
                    mtime = parsedate_to_datetime(modified).timestamp()
            storage.replace_with(self._tmp, self.final, mtime)
        except OSError as exc:
            self._cannot_keep(exc)

    def close(self) -> None:
        self._conn.close()
        if self._out is not None:
            with contextlib.suppress(OSError):
                self._out.close()
            self._out = None
            with contextlib.suppress(OSError):
                storage.discard(self._tmp)
        self._lock.close()


def _served_by_apache(environ: dict[str, Any], start_response: StartResponse
                      ) -> Iterable[bytes]:
    """mod_wsgi's daemon mode turns a 200 with a local Location into an internal redirect:
    Apache serves the file it now finds in the folder itself."""
    uri = environ.get("REQUEST_URI", "").partition("?")[0]
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
        return _served_by_apache(environ, start_response)
    if method == "HEAD":  # answered by the primary, nothing kept
        conn, resp = ask_primary(settings, method, relative, environ)
        start_response(_status(resp), _headers(resp, settings, environ))
        return _body(conn, resp)
    lock = contextlib.ExitStack()
    try:
        lock.enter_context(file_lock(settings, relative))
        if final.is_file():  # published while this request waited
            lock.close()
            return _served_by_apache(environ, start_response)
        conn, resp = ask_primary(settings, method, relative, environ)
        if not storable(resp.status, resp.msg):
            lock.close()  # the others ask the primary themselves
            start_response(_status(resp), _headers(resp, settings, environ))
            return _body(conn, resp)
        fill = Fill(conn, resp, final, lock)
    except BaseException:
        lock.close()
        raise
    start_response("200 OK", _headers(resp, settings, environ))
    return fill


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    settings = ReplicaSettings.from_environ(environ)
    try:
        return serve_file(settings, environ, start_response)
    except (OSError, http.client.HTTPException) as exc:  # the primary down or failing
        print(f"pypi-fallback-replica: {environ.get('REQUEST_URI')}: {exc}", file=sys.stderr)
        return _plain(start_response, "503 Service Unavailable",
                      "The primary could not be asked for this file")
