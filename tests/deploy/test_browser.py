"""A real browser through the real load balancer: headless Chromium runs a page with a plain
`new EventSource('/api/Todos/change-stream')`, served through deploy/nginx.conf, while the instance holding its
stream is stopped (SIGTERM), then the other one killed (SIGKILL). The page reports every event it receives to
a collector behind the same nginx; the browser must receive every event once, in order, and never give up
(an EventSource closes for good on any non-200 answer, which the nginx config is built to avoid).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy.conftest import Deployment, write_todo
from tests.deploy.harness import GunicornInstance, metric, poll, running, scrape
from tests.server import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PAGE = b"""<!doctype html>
<meta charset="utf-8">
<title>Todos, live</title>
<ol id="events"></ol>
<script>
let seq = 0;
function report(entry) {
  entry.seq = seq++;
  fetch('/e2e/report', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(entry)});
}
const source = new EventSource('/api/Todos/change-stream');
source.onopen = () => report({kind: 'open'});
source.onerror = () => report({kind: 'error', state: source.readyState});
source.addEventListener('data', (event) => {
  const item = document.createElement('li');
  item.textContent = event.data;
  document.getElementById('events').append(item);
  report({kind: 'data', id: event.lastEventId, data: event.data});
});
source.addEventListener('reset', (event) => report({kind: 'reset', id: event.lastEventId, data: event.data}));
</script>
"""


class Collector:
    """Serves the page and collects what it reports, on a port nginx proxies `/e2e/` to."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(PAGE)))
                self.end_headers()
                self.wfile.write(PAGE)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with collector._lock:
                    collector.reports.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port = self.server.server_address[1]

    def ordered(self, kind: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            reports = sorted(self.reports, key=lambda r: r["seq"])
        return [r for r in reports if kind is None or r["kind"] == kind]

    @contextmanager
    def serving(self) -> Iterator[Collector]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()
            thread.join(10)


@contextmanager
def chromium(url: str, directory: Path) -> Iterator[subprocess.Popen[bytes]]:
    directory.mkdir(parents=True, exist_ok=True)
    command = [
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={directory / 'profile'}",
        "--remote-debugging-port=0",
        url,
    ]
    with (directory / "chromium.log").open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def holder(*instances: GunicornInstance, timeout: float = 30.0) -> GunicornInstance:
    """The instance whose workers hold the browser's one stream (once exactly one does)."""
    deadline = time.monotonic() + timeout
    while True:
        held = [
            i for i in instances if metric(scrape(i.url), "gateway_stream_connections", model="Todo") == 1
        ]
        if len(held) == 1:
            return held[0]
        assert time.monotonic() < deadline, f"no single instance holds the browser's stream: {held}"
        time.sleep(0.1)


@pytest.mark.timeout(240)
async def test_browser_event_source_survives_sigterm_and_sigkill(
    deployment: Deployment, tmp_path: Path
) -> None:
    assert shutil.which(CHROMIUM), "chromium is not installed (apt-get install -y chromium; see .ci/run)"
    a = deployment.instance("a")
    b = deployment.instance("b")
    collector = Collector()
    location = (
        f"        location /e2e/ {{\n            proxy_pass http://127.0.0.1:{collector.port};\n        }}\n"
    )
    with (
        collector.serving(),
        running(a, b),
        deployment.nginx([a.address, b.address], extra_locations=location) as nginx,
    ):
        async with httpx.AsyncClient(timeout=10.0) as http:
            written: list[int] = []

            async def write(count: int) -> None:
                """`count` successful writes. A POST that met the killed instance fails (nginx never re-sends
                a POST that reached an upstream); like a client, write again."""
                done = 0
                while done < count:
                    target = await write_todo(http, nginx.url, f"browser {len(written)}")
                    if target is not None:
                        written.append(target)
                        done += 1
                    await asyncio.sleep(0.1)

            def received() -> int:
                return len(collector.ordered("data"))

            async def received_all() -> bool:
                return received() == len(await deployment.stream_entries()) >= len(written)

            with chromium(f"{nginx.url}/e2e/", tmp_path / "chromium"):
                await poll(lambda: collector.ordered("open"), 60, "the page's EventSource to open")
                await write(5)
                await poll(lambda: received() == 5, 30, "the browser to receive the first 5 events")

                # Graceful stop of the instance holding the stream; writes continue through the drain.
                stopping = await asyncio.to_thread(holder, a, b)
                stopping.signal(signal.SIGTERM)
                await write(5)
                await poll(lambda: not stopping.running, 30, f"{stopping.name} to exit after SIGTERM")
                await write(5)
                await poll(received_all, 30, "the browser to resume after SIGTERM")
                await asyncio.to_thread(stopping.start)

                # Crash of the instance holding it now; the browser reconnects to the restarted one.
                crashing = await asyncio.to_thread(holder, a, b)
                crashing.kill()
                await write(5)
                await poll(received_all, 30, "the browser to resume after SIGKILL")
                await asyncio.to_thread(crashing.start)
                await write(2)
                await poll(received_all, 30, "the browser to receive events after the restarts")

    entries = await deployment.stream_entries()
    expected = [{"id": f"{e.epoch}-{e.offset}", "data": e.change.decode()} for e in entries]
    got = [{"id": r["id"], "data": r["data"]} for r in collector.ordered("data")]
    assert got == expected
    targets = [json.loads(r["data"])["target"] for r in collector.ordered("data")]
    assert all(targets.count(target) == 1 for target in written)
    assert len(got) >= 22
    assert collector.ordered("reset") == []
    assert all(r["state"] != 2 for r in collector.ordered("error")), "the EventSource gave up (CLOSED)"
    assert len(collector.ordered("open")) >= 3  # the first connection and one after each stop
