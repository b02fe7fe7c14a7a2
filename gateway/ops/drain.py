"""Graceful drain: on SIGTERM/SIGQUIT/SIGINT, stop taking streams and end the open ones over a window.

uvicorn (alone, or inside gunicorn's uvicorn worker) waits for open responses before it shuts down, and a
change stream never ends by itself, so without this a stream would hold the worker until it is killed. The
server's own signal handler still runs (it stops accepting and finishes in-flight REST requests); ours runs
first and ends each stream at a random moment of the drain window, so clients reconnect to the other workers
gradually, resuming with `Last-Event-ID`. After the window, anything still open (a stream that registered
while the drain began) is ended too, so the worker always exits within the window plus a moment.

SIGQUIT: gunicorn's arbiter sends it to its workers on SIGQUIT/SIGINT ("quick shutdown"), and the uvicorn
worker maps it to a flag that uvicorn never reads, so the worker would keep serving until gunicorn's graceful
timeout ran out and it was SIGKILLed, its relay leases unreleased. Plain uvicorn does not handle SIGQUIT at
all. Here SIGQUIT stops the server exactly as SIGTERM does: drain, finish, hand the leases over, exit.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from gateway.fanout.hub import Hub
from gateway.fanout.queue import State
from gateway.ops.metrics import Metrics
from gateway.tasks import cancel_and_wait

log = logging.getLogger("gateway.drain")

DRAIN_SIGNALS = (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT)
SWEEP_INTERVAL = 0.5
"""Seconds between sweeps for streams that outlived the window."""
Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class Drain:
    """Owns the drain: the signal handlers it chains, the draining flag, and the sweeper task."""

    def __init__(self, hub: Hub, metrics: Metrics, window: float) -> None:
        self._hub = hub
        self._metrics = metrics
        self._window = window
        self.draining = False
        self._previous: dict[signal.Signals, Handler] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def window(self) -> float:
        return self._window

    def install(self) -> None:
        """Chain our handler before the server's; call from the running loop's thread (the lifespan)."""
        self._loop = asyncio.get_running_loop()
        for sig in DRAIN_SIGNALS:
            try:
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread (a test client): the owner drains explicitly
                self._previous.pop(sig, None)

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            if signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, previous)
        self._previous.clear()

    async def aclose(self) -> None:
        """Restore the signal handlers and stop the sweeper."""
        self.uninstall()
        if self._sweeper is not None:
            await cancel_and_wait([self._sweeper])
            self._sweeper = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.begin)
        previous = self._previous.get(signal.Signals(signum))
        if signum == signal.SIGQUIT:
            # Stop the server the way SIGTERM does (uvicorn's handler); see the module docstring.
            stop = self._previous.get(signal.SIGTERM)
            if callable(stop):
                stop(signal.SIGTERM, frame)
            if callable(previous):
                previous(signum, frame)
            return
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL and signum == signal.SIGINT:
            raise KeyboardInterrupt

    def begin(self) -> None:
        """Refuse new streams from now on, and end the open ones over the drain window."""
        if self.draining:
            return
        self.draining = True
        self._metrics.draining()
        log.info("draining", extra={"fields": {"streams": self._hub.count, "window_s": self._window}})
        self._hub.close_all("shutdown", self._window)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="drain-sweeper")

    async def _sweep(self) -> None:
        """After the window, end whatever is still open: streams that registered as the drain began."""
        await asyncio.sleep(self._window)
        while True:
            late = [s for s in self._hub.queues() if s.state is not State.CLOSED]
            if late:
                log.info(
                    "draining: ending streams opened during the drain",
                    extra={"fields": {"streams": len(late)}},
                )
                for queue in late:
                    queue.close("shutdown")
            await asyncio.sleep(SWEEP_INTERVAL)
