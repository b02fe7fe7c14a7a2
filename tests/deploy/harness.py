"""Real deployments for tests: gunicorn instances (deploy/gunicorn.conf.py) behind a real nginx
(deploy/nginx.conf, rendered with the test's ports), plus Prometheus scraping and EventSource-like followers.

Everything runs on loopback on free ports, with the test's own database, Redis prefix and directories, so
several engineers' runs never collide. Processes are owned by the objects that started them and are killed
(whole process groups) when the test ends, passed or failed.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gateway.client.sse import SSEParser
from tests.server import ROOT, free_port

GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
STREAM_PATH = "/api/Todos/change-stream"


def clean_environ() -> dict[str, str]:
    """This process's environment without settings of its own that would leak into a child gateway."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("GATEWAY_")
        and key not in ("PROMETHEUS_MULTIPROC_DIR", "PORT", "WEB_CONCURRENCY")
    }


# -- nginx -----------------------------------------------------------------------------------------------


def _replace_once(text: str, pattern: str, replacement: str) -> str:
    new, count = re.subn(pattern, replacement, text, count=0, flags=re.MULTILINE)
    assert count == 1, f"deploy/nginx.conf: expected exactly one match of {pattern!r}, found {count}"
    return new


def render_nginx_conf(
    *, port: int, upstreams: list[str], directory: Path, extra_locations: str = "", worker_processes: int = 1
) -> str:
    """deploy/nginx.conf with its listen port, upstream servers and file paths replaced, nothing else.

    Every location, proxy and upstream setting is the production one, so the tests exercise the real file.
    Each replaced line must occur exactly once (a changed file fails here rather than being half-rendered).
    """
    text = NGINX_CONF.read_text()
    user = "user root;" if os.geteuid() == 0 else ""  # as root, workers would otherwise run as `nginx`
    text = _replace_once(text, r"^user \S+;$", user)
    text = _replace_once(text, r"^worker_processes \S+;$", f"worker_processes {worker_processes};")
    text = _replace_once(text, r"^pid \S+;$", f"pid {directory}/nginx.pid;")
    text = _replace_once(text, r"^error_log \S+ (\w+);$", rf"error_log {directory}/error.log \1;")
    text = _replace_once(text, r"^(\s*)access_log \S+ (\w+);$", rf"\1access_log {directory}/access.log \2;")
    text = _replace_once(text, r"^(\s*)listen 80;$", rf"\1listen 127.0.0.1:{port};")
    match = re.search(r"^(\s*)server gateway:3000( [^;]*)?;$", text, flags=re.MULTILINE)
    assert match is not None, "deploy/nginx.conf: no `server gateway:3000 ...;` line in the upstream"
    indent, parameters = match.group(1), match.group(2) or ""
    servers = "\n".join(f"{indent}server {upstream}{parameters};" for upstream in upstreams)
    text = text[: match.start()] + servers + text[match.end() :]
    temp = "\n".join(
        f"    {name}_temp_path {directory}/{name};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = _replace_once(text, r"^http \{$", "http {\n" + temp)
    if extra_locations:
        text = _replace_once(text, r"^(\s*)location / \{$", extra_locations + r"\n\1location / {")
    return text


class Nginx:
    """A real nginx serving the rendered deploy/nginx.conf from its own directory."""

    def __init__(
        self, directory: Path, upstreams: list[str], *, extra_locations: str = "", port: int | None = None
    ) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.config = directory / "nginx.conf"
        self.config.write_text(
            render_nginx_conf(
                port=self.port, upstreams=upstreams, directory=directory, extra_locations=extra_locations
            )
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, *extra: str) -> list[str]:
        return [
            "nginx",
            "-p",
            str(self.directory),
            "-e",
            str(self.directory / "error.log"),
            "-c",
            str(self.config),
            *extra,
        ]

    def check(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30)

    def start(self, timeout: float = 15.0) -> Nginx:
        self.process = subprocess.Popen(self.command("-g", "daemon off;"), start_new_session=True)
        deadline = time.monotonic() + timeout
        while not _accepts(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.directory / "error.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"nginx did not start on port {self.port}:\n{log}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# -- gunicorn --------------------------------------------------------------------------------------------


class GunicornInstance:
    """`gunicorn -c deploy/gunicorn.conf.py --bind 127.0.0.1:PORT --workers N` in a process group of its own,
    so that `kill()` takes the arbiter and all its workers down at once, as a crashed host or container."""

    def __init__(
        self,
        env: dict[str, str],
        *,
        directory: Path,
        workers: int = 2,
        port: int | None = None,
        name: str = "gw",
    ) -> None:
        self.name = name
        self.port = port or free_port()
        self.workers = workers
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.env = {**clean_environ(), "PROMETHEUS_MULTIPROC_DIR": str(directory / "metrics"), **env}
        self.log_path = directory / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(GUNICORN_CONF),
            "--bind",
            self.address,
            "--workers",
            str(self.workers),
            *extra,
        ]

    def spawn(self) -> None:
        """Start the process; `wait_ready` waits for its workers."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start(self, timeout: float = 60.0) -> GunicornInstance:
        self.spawn()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        """Until every worker answers /readyz 200 (each new connection may reach another worker)."""
        deadline = time.monotonic() + timeout
        ready_in_a_row = 0
        while ready_in_a_row < 2 * self.workers:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"gunicorn {self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"gunicorn {self.name} not ready after {timeout}s:\n{self.log_tail()}")
            try:
                ok = httpx.get(f"{self.url}/readyz", timeout=2.0).status_code == 200
            except httpx.HTTPError:
                ok = False
            ready_in_a_row = ready_in_a_row + 1 if ok else 0
            if not ok:
                time.sleep(0.1)

    def log_tail(self, size: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        """Send `sig` to the arbiter only (what an orchestrator's stop does)."""
        assert self.process is not None
        self.process.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL the arbiter and every worker at once."""
        if self.process is not None:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.running:
            self.kill()
        elif self.process is not None:
            with suppress(ProcessLookupError, PermissionError):  # workers orphaned by a dead arbiter
                os.killpg(self.process.pid, signal.SIGKILL)


@contextmanager
def running(*items: GunicornInstance) -> Iterator[tuple[GunicornInstance, ...]]:
    """Start all (their boots overlap) and kill all at the end, whatever happens."""
    try:
        for item in items:
            item.spawn()
        for item in items:
            item.wait_ready(60.0)
        yield items
    finally:
        for item in items:
            item.close()


# -- metrics ---------------------------------------------------------------------------------------------


def scrape(url: str) -> str:
    response = httpx.get(f"{url}/metrics", timeout=5.0)
    response.raise_for_status()
    return response.text


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def ascrape(url: str, client: httpx.AsyncClient) -> str:
    response = await client.get(f"{url}/metrics", timeout=5.0)
    response.raise_for_status()
    return response.text


async def poll(condition: Any, timeout: float, what: str, interval: float = 0.1) -> None:
    """Await until `condition()` (sync or async) is true; fail naming `what` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


# -- EventSource-like followers -------------------------------------------------------------------------


@dataclass
class Connection:
    opened_at: float  # loop time the 200 arrived
    status: int
    ended_at: float | None = None
    events: int = 0
    error: str | None = None
    gateway: bool = False  # a gateway's stream (it says `:ok`), not nginx's "come back later" answer


@dataclass
class Follower:
    """Follows a change stream the way a browser's EventSource does: reconnect whenever the stream ends or
    fails, after the server's `retry:`, sending the last event id it saw (including `id:`-only bookmarks).

    Like an EventSource, it keeps its last event id across connections: a connection that carries no `id:`
    (nginx's empty "retry in 2 s" stream when no instance can take one) leaves it as it was."""

    index: int
    url: str
    events: list[tuple[str, str]] = field(default_factory=list)  # (id, data) of every `data` event
    others: list[tuple[str, str]] = field(default_factory=list)  # any other event (reset, error)
    connections: list[Connection] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    last_event_id: str = ""
    retry_ms: int = 1000
    stopping: bool = False
    live: bool = False  # a gateway stream is open right now

    def connections_since(self, moment: float) -> list[Connection]:
        """The gateway streams opened at or after `moment`."""
        return [c for c in self.connections if c.opened_at >= moment and c.gateway]

    async def run(self, client: httpx.AsyncClient) -> None:
        loop = asyncio.get_running_loop()
        while not self.stopping:
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
            if self.last_event_id:
                headers["Last-Event-ID"] = self.last_event_id
            connection: Connection | None = None
            try:
                async with client.stream("GET", self.url, headers=headers) as response:
                    self.statuses.append(response.status_code)
                    if response.status_code == 200:
                        connection = Connection(loop.time(), 200)
                        self.connections.append(connection)
                        parser = SSEParser()
                        async for chunk in response.aiter_raw():
                            for event in parser.feed(chunk):
                                if event.event == "data":
                                    self.events.append((event.last_event_id, event.data))
                                    connection.events += 1
                                else:
                                    self.others.append((event.event, event.data))
                            if parser.last_event_id:  # this connection has moved it
                                self.last_event_id = parser.last_event_id
                            if parser.retry is not None:
                                self.retry_ms = parser.retry
                            if not connection.gateway and "ok" in parser.comments:
                                connection.gateway = True
                                self.live = True
            except Exception as exc:  # whatever ends a connection, a browser would reconnect
                if connection is not None:
                    connection.error = type(exc).__name__
                else:
                    self.statuses.append(0)
            finally:
                self.live = False
                if connection is not None:
                    connection.ended_at = loop.time()
            if not self.stopping:
                await asyncio.sleep(self.retry_ms / 1000)
