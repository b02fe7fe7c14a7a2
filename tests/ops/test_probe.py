"""The container health check: which URL it asks, and its exit status."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gateway.ops import probe
from tests.server import free_port


@pytest.mark.parametrize(
    ("environ", "url"),
    [
        ({}, "http://127.0.0.1:3000/healthz"),
        ({"PORT": "8080"}, "http://127.0.0.1:8080/healthz"),
        ({"PORT": "8080", "GATEWAY_BIND": "0.0.0.0:9000,0.0.0.0:9001"}, "http://127.0.0.1:9000/healthz"),
        ({"GATEWAY_BIND": "[::]:7000"}, "http://127.0.0.1:7000/healthz"),
    ],
)
def test_it_asks_the_port_gunicorn_binds(environ: dict[str, str], url: str) -> None:
    assert probe.local_url("/healthz", environ) == url


@contextmanager
def server(status: int) -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.mark.parametrize(("status", "code"), [(200, 0), (503, 1)])
def test_exit_status(monkeypatch: pytest.MonkeyPatch, status: int, code: int) -> None:
    with server(status) as port:
        monkeypatch.setenv("PORT", str(port))
        monkeypatch.delenv("GATEWAY_BIND", raising=False)
        assert probe.main(["probe", "/healthz"]) == code


def test_nobody_listening_is_unhealthy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", str(free_port()))
    monkeypatch.delenv("GATEWAY_BIND", raising=False)
    assert probe.main(["probe"]) == 1
