"""Start a `gateway serve` under test with a database and broker namespace of its own, and clean up after.

Everything a run creates is its own and is removed afterwards: a temporary directory (SQLite file, log), a
PostgreSQL database `gwbench_<hex>` (dropped), and Redis keys under the prefix `gwbench-<hex>` (deleted by
pattern; the shared Redis is never flushed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = ROOT / "examples" / "models"
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class GatewayConfig:
    database: str = "sqlite"  # sqlite | postgres
    broker: str = "memory"  # memory | redis
    workers: int = 1
    instances: int = 1  # separate servers on separate ports, sharing the database and broker (like hosts)
    models: Path = DEFAULT_MODELS
    extra_env: dict[str, str] | None = None
    source: Path | None = None  # run the `gateway` package found here (an A/B baseline copy)
    redis_url: str = REDIS_URL  # another Redis (peers_bench starts its own, to read its CPU alone)


@dataclass
class RunningGateway:
    urls: list[str]  # one per instance
    pids: list[int]
    log: Path

    @property
    def url(self) -> str:
        """The first instance's (the only one's, without `instances`)."""
        return self.urls[0]

    @property
    def pid(self) -> int:
        return self.pids[0]


def _postgres(sql: str) -> None:
    import asyncpg  # the gateway's own dependency

    async def run() -> None:
        connection = await asyncpg.connect(POSTGRES_ADMIN)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(run())


def _delete_redis_keys(prefix: str, url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path | None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited with {process.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1.0) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"gateway at {url} not ready after {timeout}s; see {log}")


@contextlib.contextmanager
def gateway(config: GatewayConfig, *, keep_log: bool = False) -> Iterator[RunningGateway]:
    """A running gateway for the duration of the block."""
    if (config.workers > 1 or config.instances > 1) and config.broker != "redis":
        raise ValueError("--workers > 1 and --instances > 1 need --broker redis")
    tag = secrets.token_hex(4)
    workdir = Path(tempfile.mkdtemp(prefix=f"gwbench-{tag}-"))
    env = {**os.environ, "GATEWAY_MODELS": str(config.models), **(config.extra_env or {})}
    if config.source is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(config.source), env.get("PYTHONPATH")]))
    database = f"gwbench_{tag}"
    if config.database == "postgres":
        _postgres(f'CREATE DATABASE "{database}"')
        env["GATEWAY_DATABASE_URL"] = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"
    else:
        env["GATEWAY_DATABASE_URL"] = f"sqlite+aiosqlite:///{workdir / 'gateway.db'}"
    prefix = f"gwbench-{tag}"
    if config.broker == "redis":
        env["GATEWAY_BROKER_URL"] = config.redis_url
        env["GATEWAY_REDIS_PREFIX"] = prefix
    else:
        env["GATEWAY_BROKER_URL"] = "memory://"
    env.setdefault("GATEWAY_MAX_CONNECTIONS", "100000")
    env.setdefault("GATEWAY_DRAIN_SECONDS", "1")
    log = workdir / "gateway.log"
    processes: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for _ in range(config.instances):
            port = free_port()
            with open(log, "ab") as output:
                processes.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "gateway",
                            "serve",
                            "--port",
                            str(port),
                            "--workers",
                            str(config.workers),
                            "--log-level",
                            "warning",
                        ],
                        env=env,
                        cwd=workdir,
                        stdout=output,
                        stderr=output,
                    )
                )
            urls.append(f"http://127.0.0.1:{port}")
            wait_ready(urls[-1], processes[-1], log)
        if config.workers > 1:
            time.sleep(1.0)  # every worker is up (readyz answered by one of them)
        yield RunningGateway(urls, [process.pid for process in processes], log)
    finally:
        for process in processes:
            process.send_signal(signal.SIGINT)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if config.broker == "redis":
            _delete_redis_keys(prefix, config.redis_url)
        if config.database == "postgres":
            _postgres(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        if keep_log:
            print(f"gateway log kept in {log}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
