"""`gateway serve --workers N`: every worker accepts on a listening socket of its own (`SO_REUSEPORT`).

uvicorn's supervisor hands all its workers one listening socket, and whichever worker's event loop is idle
first takes the next connection. For short requests that evens out; for change streams it does not: a
stream stays for hours on the worker that happened to accept it, and `--workers 2` delivered only
1.35-1.64x one worker (loadtests/RESULTS.md, "2 workers vs 1"), one worker busy while the other idled.
With `SO_REUSEPORT` the kernel spreads incoming connections over the sockets bound to the port by a hash of
the client's address and port, whatever the workers are doing, so each of N workers gets ~1/N of the
streams.

The supervisor keeps one socket per worker slot for its whole life: a worker that dies is replaced on the
same socket, and the connections that arrived meanwhile wait in its backlog instead of being refused.
"""

from __future__ import annotations

import logging
import socket

from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.supervisors.multiprocess import Multiprocess, Process

log = logging.getLogger("uvicorn.error")


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) that other sockets with `SO_REUSEPORT` may share; listening
    starts in the worker (asyncio's server calls `listen`)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class ReusePortMultiprocess(Multiprocess):
    """uvicorn's supervisor (signals, health checks, restarts on SIGHUP), with slot `i`'s worker always on
    socket `i`."""

    def __init__(self, config: Config, sockets: list[socket.socket]) -> None:
        if len(sockets) != config.workers:
            raise ValueError(f"one socket per worker: {len(sockets)} sockets for {config.workers} workers")
        super().__init__(config, sockets)

    def _spawn(self, slot: int) -> Process:
        process = Process(self.config, [self.sockets[slot]])
        process.start()
        return process

    def init_processes(self) -> None:
        self.processes = [self._spawn(slot) for slot in range(self.processes_num)]

    def restart_all(self) -> None:
        """Replace each worker by a new one on its socket, bringing the new one into service first."""
        for slot, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = self._spawn(slot)
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new.kill()
                new.join()
                log.error("the new worker [%s] was not ready in time; keeping [%s]", new.pid, old.pid)
                return
            old.terminate()
            old.join()
            self.processes[slot] = new

    def keep_subprocess_alive(self) -> None:
        """uvicorn's rule (a worker that fails before serving stops everything), restarting on the slot."""
        for slot, process in enumerate(self.processes):
            if self.should_exit.is_set() or process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()  # hung, or already gone
            process.join()
            if process.exitcode == STARTUP_FAILURE:  # the app or its settings are broken: so is a restart
                log.error("worker [%s] failed to start, stopping", process.pid)
                self.should_exit.set()
                return
            log.info("worker [%s] died, restarting it on its socket", process.pid)
            self.processes[slot] = self._spawn(slot)


def serve(config: Config) -> None:
    """Run `config.workers` workers of `config.app` (an import string), each on its own socket."""
    sockets = [reuseport_socket(config.host, config.port) for _ in range(config.workers)]
    try:
        ReusePortMultiprocess(config, sockets).run()
    finally:
        for sock in sockets:
            sock.close()
