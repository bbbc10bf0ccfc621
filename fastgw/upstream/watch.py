"""Notice a client that leaves while the gateway waits on its upstream, and abandon the exchange."""

from __future__ import annotations

import asyncio

from fastgw.exchange import ClientGone, Exchange

# An exchange still running this many seconds after it started gets a disconnect watcher.
WATCH_AFTER = 0.5
# How often the worker's sweep looks for such exchanges.
SWEEP_EVERY = 0.1


class watch_client:
    """Cancel the exchange when the client disconnects, and swallow that cancellation.

    The body was read already, so the next ASGI message can only be
    ``http.disconnect``. granian's ``send`` never fails for a client that left,
    so this is the only way to notice one. The watcher costs a task and a
    pending granian ``receive()`` per exchange, so it is only started for an
    exchange that lasts longer than ``WATCH_AFTER`` seconds, by one sweep per
    worker (:class:`_Sweep`) rather than a timer per exchange. A client leaving
    is then noticed within ``WATCH_AFTER + SWEEP_EVERY`` seconds plus a moment,
    and an exchange shorter than that simply runs to its end. Once started, a
    disconnect cancels the exchange's task, which closes the upstream response
    (and its connection) at once, even while the upstream is silent.
    """

    __slots__ = ("_ex", "_gone", "_sweep", "_task", "_watcher")

    def __init__(self, ex: Exchange) -> None:
        self._ex = ex
        self._gone = False
        self._watcher: asyncio.Task[None] | None = None

    async def __aenter__(self) -> None:
        self._task = asyncio.current_task()
        self._sweep = _sweep_of(asyncio.get_running_loop())
        self._sweep.add(self)

    def _start(self) -> None:
        self._watcher = self._sweep.loop.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            message = await self._ex.receive()
            if message["type"] == "http.disconnect":
                self._gone = True
                assert self._task is not None
                self._task.cancel()
                return

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> bool:
        self._sweep.active.pop(self, None)
        if self._watcher is not None:
            self._watcher.cancel()
        if self._gone and exc_type is asyncio.CancelledError:
            assert self._task is not None
            self._task.uncancel()
            raise ClientGone()
        return False


class _Sweep:
    """The exchanges of one event loop waiting for their watcher, oldest first; one timer,
    armed only while there are any."""

    __slots__ = ("active", "handle", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.active: dict[watch_client, float] = {}  # insertion order is start order
        self.handle: asyncio.TimerHandle | None = None

    def add(self, w: watch_client) -> None:
        self.active[w] = self.loop.time()
        if self.handle is None:
            self.handle = self.loop.call_later(SWEEP_EVERY, self.run)

    def run(self) -> None:
        self.handle = None
        active = self.active
        cutoff = self.loop.time() - WATCH_AFTER
        due = []
        for w, started in active.items():
            if started > cutoff:
                break
            due.append(w)
        for w in due:
            del active[w]
            w._start()
        if active:
            self.handle = self.loop.call_later(SWEEP_EVERY, self.run)


_last: tuple[asyncio.AbstractEventLoop | None, _Sweep | None] = (None, None)


def _sweep_of(loop: asyncio.AbstractEventLoop) -> _Sweep:
    global _last
    cached_loop, sweep = _last
    if cached_loop is loop and sweep is not None:
        return sweep
    sweep = _Sweep(loop)
    _last = (loop, sweep)
    return sweep
