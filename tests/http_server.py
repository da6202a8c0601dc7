"""A tiny local HTTP server for download tests: canned routes, Range support, request log.

Routes map a path to a Route (or bytes for a plain 200, or a list of Routes served one per
request, the last one repeating) so tests can script "503 then 200" or "drop then resume".
"""
from __future__ import annotations

import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    delay: float = 0.0  # seconds to wait before answering
    content_type: str = "application/octet-stream"
    headers: dict[str, str] = field(default_factory=dict)
    ranges: bool = True  # honour Range on a 200 route; False answers 200 with the full body
    truncate: int | None = None  # announce the full length but send only this many bytes


@dataclass
class Seen:
    path: str
    headers: dict[str, str]


class LocalServer:
    """ThreadingHTTPServer on 127.0.0.1:<free port> in a daemon thread."""

    def __init__(self, routes: dict[str, Route | bytes | list[Route]] | None = None) -> None:
        self.routes: dict[str, Route | bytes | list[Route]] = dict(routes or {})
        self.counts: Counter[str] = Counter()
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _handler_for(self))
        self.port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        # A short poll interval keeps close() (and so each test's teardown) fast.
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def ranges_seen(self, path: str) -> list[str]:
        return [r.headers["Range"] for r in self.requests if r.path == path and "Range" in r.headers]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _next_route(self, path: str) -> Route | None:
        with self._lock:
            self.counts[path] += 1
            spec = self.routes.get(path)
            if isinstance(spec, list):
                n = self.counts[path] - 1
                spec = spec[min(n, len(spec) - 1)]
        return Route(body=spec) if isinstance(spec, bytes) else spec


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a handler still sleeping must not hold up close()

    def handle_error(self, request, client_address) -> None:
        pass  # clients that time out and hang up are expected here


_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


def _handler_for(server: LocalServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            with server._lock:
                server.requests.append(Seen(path, dict(self.headers.items())))
            route = server._next_route(path)
            if route is None:
                route = Route(b"not found", status=404, content_type="text/plain")
            if route.delay:
                time.sleep(route.delay)

            status, body, headers = route.status, route.body, dict(route.headers)
            m = _RANGE.match(self.headers.get("Range", ""))
            if m and status == 200 and route.ranges:
                first = int(m.group(1))
                last = min(int(m.group(2)) if m.group(2) else len(body) - 1, len(body) - 1)
                if first >= len(body):
                    status, body = 416, b""
                    headers["Content-Range"] = f"bytes */{len(route.body)}"
                else:
                    status, body = 206, body[first : last + 1]
                    headers["Content-Range"] = f"bytes {first}-{last}/{len(route.body)}"

            self.send_response(status)
            self.send_header("Content-Type", route.content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            sent = body if route.truncate is None else body[: route.truncate]
            self.wfile.write(sent)
            self.close_connection = True

    return Handler


def closed_port_url(path: str = "/x") -> str:
    """A URL on 127.0.0.1 where nothing listens, so connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"
