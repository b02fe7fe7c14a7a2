"""`gateway serve --workers 2`: each worker accepts on a socket of its own, so both take connections."""

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


def _established_on(port: int) -> dict[str, int]:
    """inode -> local port of every established TCP socket whose local port is `port`."""
    found = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        if local_port == port and fields[3] == "01":  # ESTABLISHED
            found[fields[9]] = local_port
    return found


def _workers(pid: int) -> list[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    children = [int(child) for child in text.split()]
    return [child for child in children if b"resource_tracker" not in _cmdline(child)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b"resource_tracker"  # gone: not a worker either


@pytest.fixture
def two_workers(tmp_path: Path, redis_url: str, redis_prefix: str) -> Iterator[tuple[int, list[int]]]:
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
        "GATEWAY_MODELS": str(EXAMPLE_MODELS),
        "GATEWAY_BROKER_URL": redis_url,
        "GATEWAY_REDIS_PREFIX": redis_prefix,
    }
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - the child writes it until the end
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--workers", "2", "--port", str(port)],
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
            if ready == 8 and len(workers) == 2:
                break
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
    worker woke first could take them all; with one socket each, the kernel spreads them by address."""
    port, workers = two_workers
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(CONNECTIONS)]
    try:
        for client in clients:  # a request each, answered: the connection was accepted by a worker
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        for client in clients:
            assert client.recv(4096).startswith(b"HTTP/1.1 200")
        established = _established_on(port)
        held = {worker: len(_socket_inodes(worker) & set(established)) for worker in workers}
    finally:
        for client in clients:
            client.close()
    assert sum(held.values()) == CONNECTIONS, held
    assert all(count >= CONNECTIONS // 4 for count in held.values()), held  # P(fail) ~ 3e-5 for a fair split


def test_sockets_share_the_port() -> None:
    first = reuseport_socket("127.0.0.1", 0)
    try:
        second = reuseport_socket("127.0.0.1", first.getsockname()[1])
        second.close()
    finally:
        first.close()
