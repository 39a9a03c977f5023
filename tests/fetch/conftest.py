"""Fixtures of the fetch tests: a local HTTP server, and no connection beyond this machine."""

import socket
import threading

import pytest
from fetch_fixtures import LOOPBACK, FileServer, Handler, Server


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Refuse any connection beyond this machine, and keep proxies out of the way."""
    real_connect = socket.socket.connect

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:
            raise AssertionError(f"a fetch test tried to reach {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")


@pytest.fixture
def server():
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.files = FileServer(httpd.server_address[1])
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd.files
    httpd.shutdown()
    httpd.server_close()
    thread.join()
