"""The soak's rough traffic beside the load generator's clean mix: errors, client aborts
and slow readers, each counted so the soak can check the gateway recorded every one.

:class:`Chaos` runs in its own thread and event loop, at a fixed rate, cycling through:

* ``error_404``: an unknown model; ``error_400``: a body that is not JSON;
* ``abort``: a stream read until its first event, then the socket closed;
* ``slow_reader``: a stream read in small pieces with pauses between them.

Everything targets one gateway on loopback and is bounded (rate, duration, concurrency).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

from bench import payloads as P

KINDS = ("error_404", "error_400", "abort", "slow_reader")


@dataclass
class ChaosResult:
    sent: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.sent.values())


class Chaos:
    def __init__(self, port: int, rate: float, duration: float, model: str, key: str = "sk-soak",
                 concurrency: int = 32) -> None:
        self.port = port
        self.rate = rate
        self.duration = duration
        self.model = model
        self.key = key
        self.concurrency = concurrency
        self.result = ChaosResult()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> Chaos:
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> ChaosResult:
        self._thread.join(timeout)
        return self.result

    def _request(self, kind: str) -> bytes:
        host = f"127.0.0.1:{self.port}"
        headers = {"Authorization": f"Bearer {self.key}"}
        if kind == "error_404":
            body = P.chat_body("no-such-model-for-soak", False)
        elif kind == "error_400":
            body = b'{"model": "' + self.model.encode() + b'", "messages": [}'
        else:
            body = P.chat_body(self.model, True)
        return P.http_request("POST", host, "/v1/chat/completions", body, headers)

    async def _one(self, kind: str) -> None:
        r = self.result
        r.sent[kind] = r.sent.get(kind, 0) + 1
        status = 0
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            try:
                writer.write(self._request(kind))
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                status = int(head[9:12])
                if kind == "abort":
                    await asyncio.wait_for(reader.readuntil(b"\n\n"), 30)
                elif kind == "slow_reader":
                    async with asyncio.timeout(60):
                        while True:
                            piece = await reader.read(256)
                            if not piece or piece.endswith(b"0\r\n\r\n"):
                                break
                            await asyncio.sleep(0.005)
                else:
                    await asyncio.wait_for(reader.read(65536), 30)
            finally:
                writer.close()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            r.failures[kind] = r.failures.get(kind, 0) + 1
        by = r.statuses.setdefault(kind, {})
        by[status] = by.get(status, 0) + 1

    async def _run(self) -> None:
        gate = asyncio.Semaphore(self.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        i = 0

        async def guarded(kind: str) -> None:
            async with gate:
                await self._one(kind)

        while (now := time.monotonic() - start) < self.duration:
            due = i / self.rate
            if due > now:
                await asyncio.sleep(due - now)
            task = asyncio.create_task(guarded(KINDS[i % len(KINDS)]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
