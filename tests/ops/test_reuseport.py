"""Two workers on one port, `gateway serve --workers 2` and gunicorn with deploy/gunicorn.conf.py: each worker
accepts on a socket of its own (`SO_REUSEPORT`), so both take a fair share of the connections.

On one shared socket, gunicorn's two idle workers took 34/30, 56/8 and 61/3 of 64 connections in three
tries (the worker that wakes first accepts): a fair split there is luck, so the listening sockets are
checked too."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.ops.reuseport import reuseport_socket
from tests.conftest import EXAMPLE_MODELS
from tests.server import ROOT, free_port

CONNECTIONS = 64


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _sockets_on(port: int, state: str) -> set[str]:
    """The inodes of the TCP sockets in `state` ("01" established, "0A" listening) on local port `port`."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == state:
            found.add(fields[9])
    return found


def _workers(pid: int) -> list[int]:
    """The supervisor's or arbiter's worker processes (not multiprocessing's resource tracker)."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    children = [int(child) for child in text.split()]
    return [child for child in children if b"resource_tracker" not in _cmdline(child)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b"resource_tracker"  # gone: not a worker either


def _command(server: str, port: int) -> list[str]:
    if server == "serve":
        return [sys.executable, "-m", "gateway", "serve", "--workers", "2", "--port", str(port)]
    return [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py"]


@pytest.fixture(params=["serve", "gunicorn"])
def two_workers(
    request: pytest.FixtureRequest, tmp_path: Path, redis_url: str, redis_prefix: str
) -> Iterator[tuple[int, list[int]]]:
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
        "GATEWAY_MODELS": str(EXAMPLE_MODELS),
        "GATEWAY_BROKER_URL": redis_url,
        "GATEWAY_REDIS_PREFIX": redis_prefix,
        "GATEWAY_BIND": f"127.0.0.1:{port}",
        "GATEWAY_WORKERS": "2",
    }
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - the child writes it until the end
    process = subprocess.Popen(
        _command(request.param, port),
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 60
        workers: list[int] = []
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            workers = _workers(process.pid)
            ready = 0
            for _ in range(8):  # each worker must answer: several fresh connections
                with contextlib.suppress(httpx.HTTPError):
                    ready += httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
            listening = _sockets_on(port, "0A")
            if ready == 8 and len(workers) == 2 and all(_socket_inodes(w) & listening for w in workers):
                break  # both listen: a worker still booting would leave every connection to the other
            time.sleep(0.2)
        else:
            raise TimeoutError((tmp_path / "serve.log").read_text())
        yield port, workers
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_both_workers_take_connections(two_workers: tuple[int, list[int]]) -> None:
    """64 connections from one client, opened while the workers idle: with one shared socket whichever
    worker woke first took nearly all; with one socket each, the kernel spreads them by address, and every
    connection is answered (none waits on a socket that no worker accepts from)."""
    port, workers = two_workers
    clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(CONNECTIONS)]
    try:
        for client in clients:  # a request each, answered: the connection was accepted by a worker
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        for client in clients:
            assert client.recv(4096).startswith(b"HTTP/1.1 200")
        established = _sockets_on(port, "01")
        held = {worker: len(_socket_inodes(worker) & established) for worker in workers}
    finally:
        for client in clients:
            client.close()
    assert sum(held.values()) == CONNECTIONS, held
    assert all(count >= CONNECTIONS // 4 for count in held.values()), held  # P(fail) ~ 3e-5 for a fair split


def test_each_worker_listens_on_a_socket_of_its_own(two_workers: tuple[int, list[int]]) -> None:
    """What makes the spread the kernel's, whatever the workers' load: with one shared socket (the
    default of uvicorn's supervisor and gunicorn's arbiter) every worker holds the same listening socket,
    and the worker whose event loop wakes first accepts."""
    port, workers = two_workers
    listening = _sockets_on(port, "0A")
    first, second = (_socket_inodes(worker) & listening for worker in workers)
    assert first, workers
    assert second, workers
    assert not first & second


def test_sockets_share_the_port() -> None:
    first = reuseport_socket("127.0.0.1", 0)
    try:
        second = reuseport_socket("127.0.0.1", first.getsockname()[1])
        second.close()
    finally:
        first.close()
