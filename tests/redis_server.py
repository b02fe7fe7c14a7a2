"""Private `redis-server` processes for tests that stop, restart, flush or reconfigure Redis.

The shared Redis on 6379 is never stopped or flushed; a test that needs to do that to a server starts its own
here, on a free port, without persistence (`--save '' --appendonly no`), so a restart always comes back empty,
which is exactly the "Redis lost its data" case. Use the `RedisServers` factory so that every process is
stopped even when a test fails:

    with RedisServers(tmp_path) as servers:
        server = servers.start(password="s3cret")
        ... server.url ... server.stop() ... server.start() ...

All methods are synchronous and return within a few seconds; from async tests, the short blocking is harmless.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


CLUSTER_BUS_OFFSET = 10_000
"""A cluster node also listens on its port + 10000 (the cluster bus)."""


def free_port(*, cluster_bus: bool = False) -> int:
    """A TCP port nobody listens on right now (the usual bind-to-0 trick; racy only against other tests).

    With `cluster_bus`, the port 10000 above it is free too (and exists), as a cluster node needs."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if not cluster_bus:
            return port
        if port + CLUSTER_BUS_OFFSET <= 65535 and _bindable(port + CLUSTER_BUS_OFFSET):
            return port
    raise RuntimeError("found no free port pair for a cluster node")


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def answers(port: int, host: str = "127.0.0.1") -> bool:
    """True if something on `port` replies to a RESP PING (an auth error is a reply too)."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64)[:1] in (b"+", b"-")
    except OSError:
        return False


class RedisServer:
    """One `redis-server` process on a fixed port and directory; start, stop and restart it at will."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        password: str | None = None,
        args: Sequence[str] = (),
        config: str | None = None,
    ) -> None:
        """`args` are extra command-line options (`["--cluster-enabled", "yes"]`); `config` is the text of a
        config file passed first (Sentinel needs one it can rewrite: `config="sentinel monitor ..."` together
        with `args=["--sentinel"]`)."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        self.binary = binary
        self.port = port if port is not None else free_port()
        self.host = "127.0.0.1"
        self.password = password
        self.directory = directory / f"redis-{self.port}"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.args = list(args)
        self.config = config
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"RedisServer(port={self.port}, running={self.running})"

    @property
    def url(self) -> str:
        """`redis://[:password@]127.0.0.1:<port>/0`."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        command = [self.binary]
        if self.config is not None:
            config_file = self.directory / "redis.conf"
            if not config_file.exists():  # Sentinel rewrites its file: keep what it learnt across restarts
                config_file.write_text(self.config)
            command.append(str(config_file))
        command += ["--port", str(self.port), "--bind", self.host, "--dir", str(self.directory)]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        if self.password:
            command += ["--requirepass", self.password]
        return command + self.args

    def start(self) -> RedisServer:
        """Start the server (empty) and return once it answers; raises RuntimeError if it does not."""
        if self.running:
            return self
        log = (self.directory / "server.log").open("ab")
        try:
            self._process = subprocess.Popen(
                self.command(), cwd=self.directory, stdout=log, stderr=subprocess.STDOUT
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while not answers(self.port, self.host):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.directory / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{tail}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after STOP_TIMEOUT) and wait until its port is closed."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)

    def kill(self) -> None:
        """Stop the server abruptly (SIGKILL), as a crash would."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        self.stop()

    def restart(self) -> RedisServer:
        """Stop and start again on the same port. The server comes back empty (no persistence)."""
        self.stop()
        return self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class RedisServers:
    """A factory of `RedisServer`s in one directory that stops every server it started on exit."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.servers: list[RedisServer] = []

    def start(
        self,
        *,
        port: int | None = None,
        password: str | None = None,
        args: Sequence[str] = (),
        config: str | None = None,
    ) -> RedisServer:
        server = RedisServer(self.directory, port=port, password=password, args=args, config=config)
        self.servers.append(server)
        return server.start()

    def cluster(self, masters: int = 3) -> list[RedisServer]:
        """A Redis Cluster of `masters` empty nodes without replicas; returns once all slots are served."""
        nodes = [
            self.start(
                port=free_port(cluster_bus=True),
                args=["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"],
            )
            for _ in range(masters)
        ]
        addresses = [f"{node.host}:{node.port}" for node in nodes]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        deadline = time.monotonic() + START_TIMEOUT
        for node in nodes:
            while b"cluster_state:ok" not in _cli(node, "CLUSTER", "INFO"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the cluster on {addresses} did not become ok")
                time.sleep(0.05)
        return nodes

    def sentinel(self, master: RedisServer, service: str = "mymaster") -> RedisServer:
        """A Sentinel that monitors `master` under the name `service`."""
        auth = f"sentinel auth-pass {service} {master.password}\n" if master.password else ""
        config = f"sentinel monitor {service} {master.host} {master.port} 1\n{auth}"
        return self.start(args=["--sentinel"], config=config)

    def close(self) -> None:
        for server in self.servers:
            server.stop()

    def __enter__(self) -> RedisServers:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _cli(server: RedisServer, *command: str) -> bytes:
    auth = ["-a", server.password, "--no-auth-warning"] if server.password else []
    return subprocess.run(
        ["redis-cli", "-h", server.host, "-p", str(server.port), *auth, *command],
        check=True,
        capture_output=True,
        timeout=10,
    ).stdout
