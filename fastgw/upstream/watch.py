"""Notice a client that leaves while the gateway waits on its upstream, and abandon the exchange."""

from __future__ import annotations

import asyncio

from fastgw.exchange import ClientGone, Exchange


class watch_client:
    """Cancel the exchange when the client disconnects, and swallow that cancellation.

    The body was read already, so the next ASGI message can only be
    ``http.disconnect``. granian's ``send`` never fails for a client that left,
    so this is the only way to notice one. The watcher costs a task and a
    pending granian ``receive()`` per exchange, far more than a timer,
    so it is only started when an exchange
    lasts longer than ``WATCH_AFTER`` seconds; a timer costs far less. A client
    leaving is then noticed within ``WATCH_AFTER`` plus a moment (well within
    a second), and an exchange shorter than that simply runs to its end. Once
    started, a disconnect cancels the exchange's task, which closes the
    upstream response (and its connection) at once, even while the upstream is
    silent.
    """

    __slots__ = ("_ex", "_gone", "_handle", "_task", "_watcher")

    def __init__(self, ex: Exchange) -> None:
        self._ex = ex
        self._gone = False
        self._watcher: asyncio.Task[None] | None = None

    async def __aenter__(self) -> None:
        self._task = asyncio.current_task()
        self._handle = _loop().call_later(WATCH_AFTER, self._start)

    def _start(self) -> None:
        self._watcher = _loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            message = await self._ex.receive()
            if message["type"] == "http.disconnect":
                self._gone = True
                assert self._task is not None
                self._task.cancel()
                return

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> bool:
        self._handle.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
        if self._gone and exc_type is asyncio.CancelledError:
            assert self._task is not None
            self._task.uncancel()
            raise ClientGone()
        return False


WATCH_AFTER = 0.5
_loop = asyncio.get_running_loop
