"""A fake upstream index on 127.0.0.1 that records every request and can misbehave.

Serves ``/simple/<project>/`` as PEP 691 JSON (when asked first) or PEP 503 HTML, with
absolute links to ``/files/<filename>``. ``fault`` makes it fail in one of the ways the
internet does; every slow fault is bounded in time.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import io
import json
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("blackhole", "503", "drip", "truncated", "wrong-bytes", "gzip", "redirect-loop",
          "huge", "malformed-html", "malformed-json", "other-project", "slow-headers",
          "throttle", "hang", "throttle-wrong-bytes")
# slow-headers: the status line and headers one byte a second (60 s at most)
# throttle: bodies at ``rate`` bytes a second (in 10 chunks a second)
# throttle-wrong-bytes: throttle, and the last byte of a file changed
# hang: read the request, answer nothing until ``release()`` (or 60 s)


class FakeUpstream:
    def __init__(self) -> None:
        self.files: dict[str, dict[str, bytes]] = {}
        self.metadata: dict[str, bytes] = {}  # filename -> its PEP 658 metadata
        self.versions: dict[str, list[str]] = {}  # a project's PEP 700 list, when given
        self.requests: list[str] = []
        self.not_modified = 0  # listings answered 304 (the client's ETag matched)
        self.fault: str | None = None
        self.json = True
        self.base = ""
        self.stop: Callable[[], None] = lambda: None
        self.rate = 2 * 1024 * 1024
        self.latency = 0.0  # seconds added before each answer (a real link's round trip)
        self.released = threading.Event()
        self._digests: dict[tuple[str, int, int], str] = {}
        # API 1.4 fields, served when set: PEP 700 upload times, PEP 740 provenance objects
        # (at /integrity/<filename>/provenance), PEP 792 status, PEP 708 meta
        self.upload_times: dict[str, str] = {}
        self.provenances: dict[str, bytes] = {}
        self.status: dict[str, tuple[str, str | None]] = {}
        self.tracks: dict[str, list[str]] = {}
        self.alternate_locations: dict[str, list[str]] = {}
        self.api_version = "1.1"

    def release(self) -> None:
        """Let every hanging request go (they close without an answer)."""
        self.released.set()

    def digest(self, data: bytes) -> str:
        key = (data[:64].hex(), len(data), id(data))
        if key not in self._digests:
            self._digests[key] = hashlib.sha256(data).hexdigest()
        return self._digests[key]

    @property
    def simple_url(self) -> str:
        return f"{self.base}/simple/"

    def add(self, project: str, filename: str, data: bytes, *, upload_time: str | None = None,
            provenance: bytes | None = None, with_metadata: bool = False) -> None:
        """A file; ``with_metadata``: a wheel's METADATA served as ``<file>.metadata`` and
        advertised (PEP 658/714)."""
        self.files.setdefault(project, {})[filename] = data
        if upload_time is not None:
            self.upload_times[filename] = upload_time
        if provenance is not None:
            self.provenances[filename] = provenance
            self.api_version = "1.4"
        if with_metadata:
            with zipfile.ZipFile(io.BytesIO(data)) as whl:
                name = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
                self.metadata[filename] = whl.read(name)

    def requested(self, project: str) -> bool:
        return any(f"/{project}/" in path or f"/{project.replace('-', '_')}" in path
                   for path in self.requests)

    def html_page(self, project: str) -> bytes:
        links = "".join(
            f'<a href="{self.base}/files/{html.escape(name)}#sha256='
            f'{self.digest(data)}" data-requires-python="&gt;=3.8"'
            + (f' data-provenance="{self.base}/integrity/{html.escape(name)}/provenance"'
               if name in self.provenances else "")
            + f">{html.escape(name)}</a><br>\n"
            for name, data in sorted(self.files[project].items()))
        metas = "".join(f'<meta name="pypi:{key}" content="{html.escape(value)}">'
                        for key, value in self._metas(project))
        return (f"<!DOCTYPE html><html><head>{metas}<title>Links for {project}</title></head>"
                f"<body><h1>Links for {project}</h1>\n{links}</body></html>\n").encode()

    def _metas(self, project: str) -> list[tuple[str, str]]:
        metas = [("repository-version", self.api_version)]
        metas += [("tracks", url) for url in self.tracks.get(project, [])]
        metas += [("alternate-locations", url) for url in self.alternate_locations.get(project,
                                                                                      [])]
        if project in self.status:
            status, reason = self.status[project]
            metas.append(("project-status", status))
            if reason:
                metas.append(("project-status-reason", reason))
        return metas

    def json_page(self, project: str) -> bytes:
        files: list[dict[str, object]] = [
            {"filename": name, "url": f"../../files/{name}",
             "hashes": {"sha256": self.digest(data)},
             "requires-python": ">=3.8", "yanked": False, "size": len(data),
             "upload-time": self.upload_times.get(name, "2025-01-02T03:04:05.000000Z")}
            for name, data in sorted(self.files[project].items())]
        for entry in files:
            if entry["filename"] in self.provenances:
                entry["provenance"] = f"../../integrity/{entry['filename']}/provenance"
            metadata = self.metadata.get(str(entry["filename"]))
            if metadata is not None:
                entry["core-metadata"] = {"sha256": hashlib.sha256(metadata).hexdigest()}
        meta: dict[str, object] = {"api-version": self.api_version}
        if project in self.tracks:
            meta["tracks"] = self.tracks[project]
        page: dict[str, object] = {"meta": meta, "name": project, "files": files}
        if project in self.alternate_locations:
            page["alternate-locations"] = self.alternate_locations[project]
        if project in self.status:
            status, reason = self.status[project]
            page["project-status"] = {"status": status, **({"reason": reason} if reason
                                                            else {})}
        if project in self.versions:
            page["versions"] = self.versions[project]
        return json.dumps(page).encode()


def _handler(up: FakeUpstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # as real servers do (nginx's tcp_nodelay, Apache): headers and body are separate
        # writes, and with Nagle's algorithm a kept-alive client's delayed ACK would hold
        # every body back about 40 ms
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def send(self, status: int, body: bytes, ctype: str, **headers: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for key, value in headers.items():
                self.send_header(key.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            up.requests.append(self.path)
            if up.latency:
                time.sleep(up.latency)
            fault = up.fault
            if fault == "blackhole":
                time.sleep(20)
                return
            if fault == "hang":
                up.released.wait(60)
                self.close_connection = True
                return
            if fault == "slow-headers":
                head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nX-Pad: " + b"x" * 200
                for i in range(min(len(head), 60)):  # one byte a second, 60 s at most
                    try:
                        self.wfile.write(head[i:i + 1])
                        self.wfile.flush()
                    except OSError:
                        return
                    time.sleep(1)
                self.close_connection = True
                return
            if fault == "503":
                return self.send(503, b"down for maintenance", "text/plain")
            if fault == "redirect-loop":
                return self.send(302, b"", "text/plain", Location=self.path)
            parts = self.path.split("?")[0].strip("/").split("/")
            if len(parts) == 2 and parts[0] == "simple":
                return self.project(parts[1], fault)
            if len(parts) == 3 and parts[0] == "integrity" and parts[2] == "provenance" \
                    and parts[1] in up.provenances:
                return self.send(200, up.provenances[parts[1]], "application/json")
            if len(parts) == 2 and parts[0] == "files" and parts[1].endswith(".metadata"):
                meta = up.metadata.get(parts[1].removesuffix(".metadata"))
                if meta is not None:
                    return self.file(meta, fault)
            if len(parts) == 2 and parts[0] == "files":
                for files in up.files.values():
                    if parts[1] in files:
                        return self.file(files[parts[1]], fault)
            if parts == ["simple"]:
                return self.send(200, b"<!DOCTYPE html><html><body></body></html>", "text/html")
            self.send(404, b"not found", "text/plain")

        def project(self, project: str, fault: str | None) -> None:
            if fault == "other-project" and project != "something-else":
                return self.send(301, b"", "text/plain", Location="/simple/something-else/")
            if project not in up.files:
                return self.send(404, b"not found", "text/plain")
            wants_json = "application/vnd.pypi.simple.v1+json" in self.headers.get("Accept", "")
            if fault == "malformed-json":
                return self.send(200, b'{"files": [oops', "application/vnd.pypi.simple.v1+json")
            if fault == "malformed-html":
                return self.send(200, b"\xff\xfe<a href=", "text/html")
            if up.json and wants_json:
                body, ctype = up.json_page(project), "application/vnd.pypi.simple.v1+json"
            else:
                body, ctype = up.html_page(project), "text/html"
            etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
            if self.headers.get("If-None-Match") == etag and not fault:
                up.not_modified += 1
                self.send_response(304)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.etag = etag
            self.body(body, ctype, fault)

        def file(self, data: bytes, fault: str | None) -> None:
            if fault in ("wrong-bytes", "throttle-wrong-bytes"):
                data = data[:-1] + bytes([data[-1] ^ 1])
            self.body(data, "application/octet-stream", fault)

        def body(self, body: bytes, ctype: str, fault: str | None) -> None:
            if fault == "gzip":
                return self.send(200, gzip.compress(body), ctype, Content_Encoding="gzip")
            if fault == "huge":
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.end_headers()
                chunk = b" " * 65536
                for _ in range(2048):  # up to 128 MiB, unless the client hangs up first
                    try:
                        self.wfile.write(chunk)
                    except OSError:
                        return
                self.close_connection = True
                return
            if fault in ("throttle", "throttle-wrong-bytes"):
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                step = max(1, up.rate // 10)
                started = time.monotonic()
                for n, i in enumerate(range(0, len(body), step)):  # bounded by the body
                    try:
                        self.wfile.write(body[i:i + step])
                    except OSError:
                        return
                    time.sleep(max(0.0, started + (n + 1) / 10 - time.monotonic()))
                return
            if fault in ("truncated", "drip"):
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if fault == "truncated":
                    self.wfile.write(body[: len(body) // 2])
                else:
                    for i in range(min(len(body), 30)):  # one byte a second, 30 s at most
                        try:
                            self.wfile.write(body[i:i + 1])
                            self.wfile.flush()
                        except OSError:
                            return
                        time.sleep(1)
                self.close_connection = True
                return
            etag = getattr(self, "etag", None)
            self.send(200, body, ctype, **({"ETag": etag} if etag else {}))

    return Handler


@contextmanager
def running_upstream() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(upstream))
    server.daemon_threads = True
    upstream.base = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    stopped = []

    def stop() -> None:
        """Take the upstream off the network: connections are refused from now on."""
        if not stopped:
            stopped.append(True)
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)

    upstream.stop = stop
    try:
        yield upstream
    finally:
        stop()
