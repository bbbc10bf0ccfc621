"""Event-loop lag probe: how late a periodic timer fires, as ``fastgw_event_loop_lag_seconds``.

A worker whose loop is blocked (a long synchronous step, a collector pause, CPU
starvation) answers everything late; this measures it from inside at no per-request
cost: one timer every ``PERIOD`` seconds per worker, whose lateness (actual minus
scheduled time) goes into a histogram. The soak reports its p99.
"""

from __future__ import annotations

import asyncio

from fastgw.controls import metrics

PERIOD = 0.25


class LoopLagProbe:
    __slots__ = ("_due", "_handle", "_loop")

    def __init__(self) -> None:
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = 0.0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._arm()

    def _arm(self) -> None:
        assert self._loop is not None
        self._due = self._loop.time() + PERIOD
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        metrics.observe_loop_lag(max(0.0, self._loop.time() - self._due))
        self._arm()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
