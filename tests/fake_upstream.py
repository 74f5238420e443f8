"""A fake upstream index on 127.0.0.1 that records every request it gets.

Serves PEP 503 HTML project pages at ``/simple/<project>/`` with absolute links to
``/files/<filename>``. ``fault`` makes it misbehave (for the upstream tests).
"""

from __future__ import annotations

import hashlib
import html
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeUpstream:
    def __init__(self) -> None:
        self.files: dict[str, dict[str, bytes]] = {}
        self.requests: list[str] = []
        self.fault: str | None = None
        self.base = ""

    @property
    def simple_url(self) -> str:
        return f"{self.base}/simple/"

    def add(self, project: str, filename: str, data: bytes) -> None:
        self.files.setdefault(project, {})[filename] = data

    def requested(self, project: str) -> bool:
        return any(f"/{project}/" in path or f"/{project.replace('-', '_')}" in path
                   for path in self.requests)

    def page(self, project: str) -> bytes:
        links = "".join(
            f'<a href="{self.base}/files/{html.escape(name)}#sha256='
            f'{hashlib.sha256(data).hexdigest()}">{html.escape(name)}</a><br>\n'
            for name, data in sorted(self.files[project].items()))
        return (f"<!DOCTYPE html><html><head><title>Links for {project}</title></head>"
                f"<body><h1>Links for {project}</h1>\n{links}</body></html>\n").encode()


def _handler(upstream: FakeUpstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802
            upstream.requests.append(self.path)
            parts = self.path.split("?")[0].strip("/").split("/")
            body, ctype = None, "text/html"
            if len(parts) == 2 and parts[0] == "simple" and parts[1] in upstream.files:
                body = upstream.page(parts[1])
            elif len(parts) == 2 and parts[0] == "files":
                for files in upstream.files.values():
                    if parts[1] in files:
                        body, ctype = files[parts[1]], "application/octet-stream"
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

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
    try:
        yield upstream
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
