"""Graceful drain: on SIGTERM/SIGQUIT/SIGINT, stop taking streams and end the open ones over a window.

uvicorn (alone, or inside gunicorn's uvicorn worker) waits for open responses before it shuts down, and a
change stream never ends by itself, so without this a stream would hold the worker until it is killed. The
server's own signal handler still runs (it stops accepting and finishes in-flight REST requests); ours runs
first and ends each stream at a random moment of the drain window, so clients reconnect to the other workers
gradually, resuming with `Last-Event-ID`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from gateway.fanout.hub import Hub
from gateway.ops.metrics import Metrics

log = logging.getLogger("gateway.drain")

DRAIN_SIGNALS = (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT)
Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class Drain:
    def __init__(self, hub: Hub, metrics: Metrics, window: float) -> None:
        self._hub = hub
        self._metrics = metrics
        self._window = window
        self.draining = False
        self._previous: dict[signal.Signals, Handler] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

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

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.begin)
        previous = self._previous.get(signal.Signals(signum))
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL and signum == signal.SIGINT:
            raise KeyboardInterrupt

    def begin(self) -> None:
        """Refuse new streams from now on, and end the open ones over the drain window."""
        if self.draining:
            return
        self.draining = True
        self._metrics.draining.set(1)
        log.info("draining: ending %d streams over %.1f s", self._hub.count, self._window)
        self._hub.close_all("shutdown", self._window)
