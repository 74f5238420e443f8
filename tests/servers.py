"""Loopback servers for tests: a threaded WSGI server and a test-only basic-auth layer.

In production Apache authenticates; here ``BasicAuth`` plays that part so that real
clients (twine) can talk to the app. Every server binds 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import contextlib
import threading
from collections.abc import Callable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

WSGIApp = Callable[[dict[str, Any], Any], Any]


class BasicAuth:
    """Sets REMOTE_USER for a right user and password, answers 401 otherwise."""

    def __init__(self, app: WSGIApp, users: dict[str, str]) -> None:
        self.app, self.users = app, users

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        environ.pop("REMOTE_USER", None)
        header = environ.get("HTTP_AUTHORIZATION", "")
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if self.users.get(user) != password:
                start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="t"'),
                                                    ("Content-Type", "text/plain")])
                return [b"bad credentials\n"]
            environ["REMOTE_USER"] = user
        return self.app(environ, start_response)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 64


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@contextlib.contextmanager
def serve(app: WSGIApp) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port) in a thread; yield its base URL."""
    server = make_server("127.0.0.1", 0, app, server_class=_ThreadingServer,
                         handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
