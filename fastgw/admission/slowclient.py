"""Client-side timeouts: a request body that trickles in, and a client that stops reading.

* ``server.body_timeout``: the whole request body must arrive within this many seconds
  of the request reaching the gateway, or the answer is ``408 request_timeout``
  (:func:`body_deadline_error`). For admitted exchanges the same sweep enforces it (a
  deadline on the :class:`WatchedSend`, cleared once the body is in): a timer per request
  costs more than the rest of reading a small body. Other routes use ``asyncio.timeout``.
* ``server.send_timeout``: a response the client does not read for this many seconds
  (the server's send stays blocked: granian applies backpressure instead of buffering)
  is abandoned: the exchange is cancelled, which closes its upstream stream and frees its
  slot. :class:`SendWatch` does it without a timer per send: each admitted exchange's
  ``send`` is wrapped by a :class:`WatchedSend` that counts sends started and finished; one
  sweep per worker every ``period`` seconds cancels exchanges stuck in the same send for
  longer than the timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from fastgw.errors import GatewayError
from fastgw.exchange import Exchange, Send

log = logging.getLogger("fastgw.admission.slowclient")


def body_deadline_error(timeout: float) -> GatewayError:
    return GatewayError(408, f"The request body did not arrive within {timeout:g} seconds.",
                        type="invalid_request_error", code="request_timeout")


class WatchedSend:
    """An exchange's ASGI ``send``, counting sends started and finished (odd: one is blocked)."""

    __slots__ = ("body_deadline", "body_expired", "ex", "inner", "n", "seen", "stuck", "task")

    def __init__(self, ex: Exchange, inner: Send, body_deadline: float = 0.0) -> None:
        self.ex = ex
        self.inner = inner
        # time.monotonic() by which the request body must be in (0: no deadline, or read already).
        self.body_deadline = body_deadline
        self.body_expired = False
        self.n = 0
        self.seen = -1  # n at the last sweep
        self.stuck = 0.0  # seconds n has been odd and unchanged
        self.task = asyncio.current_task()

    async def __call__(self, message: dict[str, Any]) -> None:
        self.n += 1
        await self.inner(message)
        self.n += 1


class SendWatch:
    """The worker's watch over answers blocked on clients that do not read."""

    def __init__(self, timeout: float, body_timeout: float | None = None) -> None:
        self.timeout = timeout
        self.body_timeout = body_timeout
        self.period = min(1.0, timeout / 4, (body_timeout or 4.0) / 4)
        self.active: set[WatchedSend] = set()
        self._task: asyncio.Task[None] | None = None
        self.abandoned = 0

    def watch(self, ex: Exchange) -> WatchedSend:
        body_timeout = self.body_timeout
        watched = WatchedSend(ex, ex.send, time.monotonic() + body_timeout if body_timeout else 0.0)
        ex.send = watched
        self.active.add(watched)
        return watched

    def unwatch(self, watched: WatchedSend) -> None:
        """Stop watching: the exchange sends through the plain ``send`` again, which also
        breaks the exchange <-> watcher cycle, so the request is freed by reference counting
        as soon as it ends instead of waiting for the cyclic collector."""
        self.active.discard(watched)
        watched.ex.send = watched.inner

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._sweep())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            self.check(self.period)

    def check(self, elapsed: float) -> None:
        """One sweep: ``elapsed`` seconds since the last one."""
        now = time.monotonic()
        for w in list(self.active):
            if w.body_deadline and now >= w.body_deadline and w.task is not None and not w.task.done():
                w.body_deadline = 0.0
                w.body_expired = True  # the body reader turns the cancellation into a 408
                w.task.cancel()
                continue
            n = w.n
            if n & 1 and n == w.seen:
                w.stuck += elapsed
                if w.stuck >= self.timeout and w.task is not None and not w.task.done():
                    self.abandoned += 1
                    w.ex.error_type = "client_timeout"
                    log.warning("request %s: the client read nothing for %gs; answer abandoned",
                                w.ex.request_id, self.timeout)
                    self.active.discard(w)
                    w.task.cancel()
            else:
                w.stuck = 0.0
            w.seen = n
