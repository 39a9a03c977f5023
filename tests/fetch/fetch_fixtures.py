"""A real HTTP file server on 127.0.0.1 whose misbehaviour each test chooses, and manifest helpers."""

from __future__ import annotations

import contextlib
import hashlib
import re
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from itersg.cli import main

LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass
class Route:
    """How the server answers GET requests for one path.

    Attributes:
        body: the file's bytes.
        status: answer this status (e.g. 404) instead of the file.
        content_type: Content-Type of the file.
        fail_first: answer HTTP 500 to this many requests before serving the file.
        drop_first: on the first answer with a body, send the headers (full Content-Length) and half
            the body, then close the connection.
        honour_range: answer Range requests with 206 + Content-Range; False: ignore Range (200).
        stall_first: on the first answer with a body, send the headers, then nothing until the client
            gives up and closes the connection (at most 60 s): a silent server, whatever the client's timeout.
    """

    body: bytes = b""
    status: int = 200
    content_type: str = "application/octet-stream"
    fail_first: int = 0
    drop_first: bool = False
    honour_range: bool = True
    stall_first: bool = False


@dataclass(frozen=True)
class Request:
    path: str
    range: str | None
    status: int


class FileServer:
    """Routes and the log of answered requests of a running ``ThreadingHTTPServer``."""

    def __init__(self, port: int):
        self.port = port
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        self._served: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, path: str, body: bytes = b"", **how) -> str:
        """Serve ``body`` at ``path`` (options as in ``Route``); returns the URL."""
        self.routes[path] = Route(body=body, **how)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def requests_for(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    def next_answer(self, path: str) -> int:
        """How many requests for ``path`` came before this one."""
        with self._lock:
            count = self._served.get(path, 0)
            self._served[path] = count + 1
            return count


class Handler(BaseHTTPRequestHandler):
    server: Server

    def log_message(self, format, *args):  # keep the test output quiet
        pass

    def do_GET(self):
        files = self.server.files
        route = files.routes.get(self.path)
        range_header = self.headers.get("Range")
        count = files.next_answer(self.path)
        if route is None or route.status != 200:
            self._answer_error(404 if route is None else route.status, range_header)
        elif count < route.fail_first:
            self._answer_error(500, range_header)
        else:
            self._answer_body(route, range_header)

    def _answer_error(self, status: int, range_header: str | None) -> None:
        self.server.files.requests.append(Request(self.path, range_header, status))
        self.send_error(status)

    def _answer_body(self, route: Route, range_header: str | None) -> None:
        body, start, status = route.body, 0, 200
        match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
        if match and route.honour_range:
            start, status = int(match.group(1)), 206
        payload = body[start:]
        self.server.files.requests.append(Request(self.path, range_header, status))
        self.send_response(status)
        self.send_header("Content-Type", route.content_type)
        self.send_header("Content-Length", str(len(payload)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if route.stall_first:
            route.stall_first = False
            self.wfile.flush()
            self.connection.settimeout(60)
            with contextlib.suppress(OSError):
                while self.connection.recv(4096):  # b"" once the client has closed its end
                    pass
            self.close_connection = True
            return
        if route.drop_first:
            route.drop_first = False
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(payload)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    files: FileServer


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_entry(name: str, url: str, dest: str, body: bytes | None = None, **fields) -> dict:
    """A manifest entry of kind file; ``body`` pins its size and sha256."""
    entry = {"name": name, "kind": "file", "urls": [url], "dest": dest}
    if body is not None:
        entry.update(size=len(body), sha256=sha256(body))
    entry.update(fields)
    return entry


def write_manifest(path: Path, entries: list[dict], folders: list[dict] | None = None) -> Path:
    path.write_text(yaml.safe_dump({"version": 1, "entries": entries, "folders": folders or []}))
    return path


def run_fetch(manifest: Path, dest: Path, *args: str) -> int:
    """``itersg fetch --dest DEST --manifest MANIFEST ARGS`` with quick retries; returns the exit status."""
    quick = ["--retry-delay", "0.001", "--attempts", "3", "--timeout", "10", "--reserve", "0"]
    return main(["fetch", "--dest", str(dest), "--manifest", str(manifest), *quick, *args])


def payload(size: int, seed: int = 0) -> bytes:
    """``size`` reproducible bytes that are not a web page."""
    block = hashlib.sha256(str(seed).encode()).digest()
    return (block * (size // len(block) + 1))[:size]
