"""Load generator: raw asyncio protocol on uvloop, pre-encoded requests, several processes.

Per request it measures TTFB (for SSE: time to the first read holding a ``data:`` event; else
time to the first response byte), total time, status, bytes, and for streams the largest gap
between two reads after the first event. Results go into mergeable :class:`~bench.hdr.Histogram`
objects (microseconds), one set per worker process, merged by the parent.

Modes:
  closed  ``concurrency`` connections, each sends its next request when the last one finished.
  open    a fixed arrival ``rate``; each request has an intended send time on a fixed schedule and
          latency is measured from that time, so a slow server cannot hide latency by slowing
          the generator down (no coordinated omission). Connections are opened as needed
          (up to ``max_conns``); when all are busy, intended sends queue and the wait counts.

Bounded: every run stops at ``warmup + duration`` seconds or ``max_requests`` requests, and each
request times out after ``timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import queue
import resource
import ssl
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from bench.loadtypes import LoadResult, LoadSpec, RequestSpec

__all__ = ["LoadResult", "LoadSpec", "RequestSpec", "run_load"]

perf = time.perf_counter


HEAD, BODY_CL, BODY_CHUNKED, BODY_CLOSE = 0, 1, 2, 3


class Conn(asyncio.Protocol):
    """One keep-alive client connection; parses just enough HTTP/1.1 to find the end."""

    def __init__(self, w: Worker) -> None:
        self.w = w
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.req: RequestSpec | None = None
        self.t_int = self.t_send = self.first = self.last = 0.0
        self.maxgap = 0.0
        self.state = HEAD
        self.buf = b""
        self.left = 0  # bytes left in a Content-Length body
        self.status = 0
        self.nbytes = 0
        self.events = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, req: RequestSpec, t_int: float) -> None:
        self.req = req
        self.t_int = t_int
        self.busy = True
        self.state = HEAD
        self.buf = b""
        self.first = self.last = 0.0
        self.maxgap = 0.0
        self.nbytes = self.events = 0
        self.t_send = perf()
        self.transport.write(req.raw)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        now = perf()
        if not self.busy:
            return
        self.nbytes += len(data)
        req = self.req
        assert req is not None
        if req.stream:
            if b"data:" in data:
                self.events += data.count(b"data:")
                if self.first == 0.0:
                    self.first = now
                else:
                    g = now - self.last
                    if g > self.maxgap:
                        self.maxgap = g
                self.last = now
            elif self.first:
                g = now - self.last
                if g > self.maxgap:
                    self.maxgap = g
                self.last = now
        elif self.first == 0.0:
            self.first = now
        if self.state == HEAD:
            buf = self.buf + data if self.buf else data
            he = buf.find(b"\r\n\r\n")
            if he < 0:
                self.buf = buf
                return
            self.status = int(buf[9:12])
            hl = buf[:he].lower()
            data = buf[he + 4 :]
            self.buf = b""
            i = hl.find(b"\r\ncontent-length:")
            if i >= 0:
                j = hl.find(b"\r\n", i + 17)
                self.left = int(hl[i + 17 : j if j >= 0 else len(hl)])
                self.state = BODY_CL
            elif b"\r\ntransfer-encoding:" in hl and b"chunked" in hl:
                self.state = BODY_CHUNKED
            elif self.status in (204, 304) or 100 <= self.status < 200:
                self.left = 0
                self.state = BODY_CL
            else:
                self.state = BODY_CLOSE
                return
        if self.state == BODY_CL:
            self.left -= len(data)
            if self.left <= 0:
                self._done(now)
        elif self.state == BODY_CHUNKED and self._chunked(data):
            self._done(now)

    def _chunked(self, data: bytes) -> bool:
        """True once the body's last-chunk marker has arrived.

        Minimal parsing on purpose: SSE and JSON bodies never contain a raw CRLF followed by
        ``0`` CRLF CRLF, so the body is complete exactly when the bytes received so far end with
        ``\r\n0\r\n\r\n`` (the tail of the previous read is kept for split markers).
        Trailer fields after the last chunk are not supported.
        """
        tail = self.buf + data if self.buf else data
        if tail.endswith(b"\r\n0\r\n\r\n") or tail == b"0\r\n\r\n":
            self.buf = b""
            return True
        self.buf = tail[-8:]
        return False

    def _done(self, now: float) -> None:
        self.busy = False
        self.w.complete(self, now, self.status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.busy:
            self.busy = False
            if self.state == BODY_CLOSE:
                self.w.complete(self, perf(), self.status, lost=True)
            else:
                self.w.fail(self, "dropped" if self.status else "closed")
        self.w.lost(self)


class Worker:
    """One process's share of the load (runs in its own uvloop)."""

    def __init__(self, spec: LoadSpec, idx: int, start: float, progress: Any) -> None:
        self.s = spec
        self.idx = idx
        self.progress = progress
        self.res = LoadResult(procs=1)
        self.start = start
        self.warm_end = start + spec.warmup
        self.deadline = self.warm_end + spec.duration
        self.reqs = spec.requests
        self.rr = idx
        self.conns: set[Conn] = set()
        self.idle: list[Conn] = []
        self.pending: deque[float] = deque()
        self.connecting = 0
        self.inflight = 0
        self.stopping = False
        self.sched_done = False  # open loop: the arrival schedule is exhausted
        self.finished: asyncio.Future[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if spec.tls else None
        n = max(1, spec.procs)
        if spec.mode == "closed":
            self.share = spec.concurrency // n + (1 if idx < spec.concurrency % n else 0)
        else:
            self.share = 0
        self.max_share = max(1, spec.max_requests // n + (1 if idx < spec.max_requests % n else 0))

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    def next_req(self) -> RequestSpec:
        self.rr += 1
        return self.reqs[self.rr % len(self.reqs)]

    def can_issue(self, now: float) -> bool:
        return not self.stopping and now < self.deadline and self.res.issued < self.max_share

    def issue(self, c: Conn, t_int: float) -> None:
        self.res.issued += 1
        self.inflight += 1
        c.send(self.next_req(), t_int)

    def complete(self, c: Conn, now: float, status: int, lost: bool = False) -> None:
        self.inflight -= 1
        r = self.res
        if c.t_int >= self.warm_end:
            # latency origin: the intended time, or the actual send when the scheduler's 1 ms
            # look-ahead sent a little early (so early sends never read as negative latency)
            t0 = c.t_int if c.t_int < c.t_send else c.t_send
            first = c.first or now
            r.ttfb.record(int((first - t0) * 1e6))
            r.total.record(int((now - t0) * 1e6))
            if c.req is not None and c.req.stream:
                r.gap.record(int(c.maxgap * 1e6))
            r.statuses[status] = r.statuses.get(status, 0) + 1
            if not 200 <= status < 300:
                r.errors[f"http_{status}"] = r.errors.get(f"http_{status}", 0) + 1
            r.bytes += c.nbytes
            r.events += c.events
            if now <= self.deadline:
                r.completed += 1
        if not lost:
            self._next(c, now)

    def fail(self, c: Conn, kind: str) -> None:
        self.inflight -= 1
        if c.t_int >= self.warm_end:
            self.res.errors[kind] = self.res.errors.get(kind, 0) + 1
            self.res.statuses[0] = self.res.statuses.get(0, 0) + 1

    def _next(self, c: Conn, now: float) -> None:
        if self.s.mode == "closed":
            if self.can_issue(now):
                self.issue(c, now)
                return
        elif self.pending:
            self.issue(c, self.pending.popleft())
            return
        else:
            self.idle.append(c)
        self._check_finished()

    def lost(self, c: Conn) -> None:
        self.conns.discard(c)
        if c in self.idle:
            self.idle.remove(c)
        if self.s.mode == "closed":
            if self.can_issue(perf()):
                self.spawn(self._connect(0.0 if self.res.issued else 0.01))
                return
        elif self.pending:
            self.spawn(self._connect(0.0))
            return
        self._check_finished()

    def _check_finished(self) -> None:
        done_issuing = self.stopping or self.sched_done or perf() >= self.deadline or self.res.issued >= self.max_share
        idle = self.inflight <= 0 and self.connecting == 0 and not self.pending
        if done_issuing and idle and self.finished is not None and not self.finished.done():
            self.finished.set_result(None)

    async def _connect(self, delay: float) -> None:
        self.connecting += 1
        try:
            if delay:
                await asyncio.sleep(delay)
            loop = asyncio.get_running_loop()
            try:
                _, c = await loop.create_connection(
                    lambda: Conn(self), self.s.host, self.s.port, ssl=self.ssl,
                    server_hostname=self.s.server_hostname if self.ssl else None,
                )
            except OSError as e:
                self.connecting -= 1
                if perf() >= self.warm_end:
                    k = "connect_" + type(e).__name__
                    self.res.errors[k] = self.res.errors.get(k, 0) + 1
                    self.res.statuses[0] = self.res.statuses.get(0, 0) + 1
                retry = self.can_issue(perf()) if self.s.mode == "closed" else bool(self.pending)
                if retry and perf() < self.deadline + self.s.timeout:
                    self.spawn(self._connect(0.05))
                else:
                    self.pending.clear()
                    self._check_finished()
                return
            self.connecting -= 1
            self.conns.add(c)
            now = perf()
            if self.s.mode == "closed":
                if now < self.start:
                    self.idle.append(c)
                elif self.can_issue(now):
                    self.issue(c, now)
                else:
                    self._check_finished()
            elif self.pending:
                self.issue(c, self.pending.popleft())
            else:
                self.idle.append(c)
        except asyncio.CancelledError:
            raise

    def dispatch(self, t_int: float) -> None:
        if self.idle:
            self.issue(self.idle.pop(), t_int)
            return
        self.pending.append(t_int)
        if len(self.conns) + self.connecting < self.s.max_conns:
            self.spawn(self._connect(0.0))

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            now = perf()
            if self.progress is not None:
                self.progress[self.idx] = self.res.issued
            for c in list(self.conns):
                if c.busy and now - c.t_send > self.s.timeout and c.transport is not None:
                    c.busy = False
                    self.fail(c, "timeout")
                    c.transport.abort()
            if now > self.deadline + self.s.timeout + 1:
                self.stopping = True
                self.pending.clear()
                if self.finished is not None and not self.finished.done():
                    self.finished.set_result(None)

    async def run(self) -> LoadResult:
        loop = asyncio.get_running_loop()
        self.finished = loop.create_future()
        cpu0 = _cpu()
        wd = loop.create_task(self._watchdog())
        s = self.s
        if s.mode == "closed":
            if self.share == 0:
                self.finished.set_result(None)
            await asyncio.gather(*(self._connect(0.0) for _ in range(self.share)))
            await _sleep_until(self.start)
            now = perf()
            for c in list(self.idle):
                if self.can_issue(now):
                    self.idle.remove(c)
                    self.issue(c, now)
            self._check_finished()
        else:
            await asyncio.gather(*(self._connect(0.0) for _ in range(min(8, s.max_conns))))
            await _sleep_until(self.start)
            per = max(1, s.procs) / s.rate
            t0 = self.start + self.idx / s.rate
            i = 0
            while not self.stopping:
                now = perf()
                t_int = t0 + i * per
                while t_int <= now + 0.001:
                    if t_int >= self.deadline or self.res.issued + len(self.pending) >= self.max_share:
                        break
                    self.dispatch(t_int)
                    i += 1
                    t_int = t0 + i * per
                if t_int >= self.deadline or self.res.issued + len(self.pending) >= self.max_share:
                    break
                await asyncio.sleep(max(0.0, t_int - perf() - 0.0005))
            self.sched_done = True
            # bounded drain: sends still queued (all connections busy) get up to min(timeout, 5 s)
            drain_end = self.deadline + min(s.timeout, 5.0)
            while self.pending and perf() < drain_end and not self.stopping:
                await asyncio.sleep(0.01)
            if self.pending:  # never sent: counted, so an overloaded target cannot look clean
                n = sum(1 for t in self.pending if t >= self.warm_end)
                if n:
                    self.res.errors["unsent_backlog"] = self.res.errors.get("unsent_backlog", 0) + n
                    self.res.statuses[0] = self.res.statuses.get(0, 0) + n
                self.pending.clear()
            self._check_finished()
        await self.finished
        wd.cancel()
        for c in list(self.conns):
            if c.transport is not None:
                c.transport.close()
        self.res.window = max(0.0, min(perf(), self.deadline) - self.warm_end)
        self.res.cpu_s = _cpu() - cpu0
        if self.progress is not None:
            self.progress[self.idx] = self.res.issued
        return self.res


async def _sleep_until(t: float) -> None:
    # the loop's timers may fire up to a millisecond early: never start before ``t``
    while (left := t - perf()) > 0:
        await asyncio.sleep(left if left > 0.002 else 0)


def _cpu() -> float:
    # CLOCK_PROCESS_CPUTIME_ID: nanosecond resolution (os.times() counts 10 ms ticks).
    return time.process_time()


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _worker_main(spec: LoadSpec, idx: int, start: float, progress: Any, out: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    _raise_nofile()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        res = loop.run_until_complete(Worker(spec, idx, start, progress).run())
        out.put((idx, res.to_dict(), None))
    except BaseException as e:  # report, don't hang the parent
        out.put((idx, None, f"{type(e).__name__}: {e}"))
    finally:
        loop.close()


def run_load(spec: LoadSpec, on_tick: Callable[[int, float], None] | None = None, tick: float = 0.25) -> LoadResult:
    """Run ``spec`` in ``spec.procs`` forked processes; merge and return their results.

    ``on_tick(requests_issued_so_far, seconds_since_start)`` is called about every ``tick``
    seconds from this (parent) process while the workers run: the matrix samples gateway RSS
    and prints progress there.
    """
    if spec.mode == "open" and spec.rate <= 0:
        raise ValueError("open loop needs rate > 0")
    ctx = mp.get_context("fork")
    procs = max(1, spec.procs)
    progress = ctx.Array("q", procs, lock=False)
    out = ctx.Queue()
    start = perf() + 0.15 + 0.02 * procs + min(0.5, spec.concurrency / 4000)
    ps = [ctx.Process(target=_worker_main, args=(spec, i, start, progress, out), daemon=True) for i in range(procs)]
    for p in ps:
        p.start()
    merged = LoadResult()
    got = 0
    errors: list[str] = []
    hard_stop = start + spec.warmup + spec.duration + spec.timeout + 10
    while got < procs:
        try:
            _idx, d, err = out.get(timeout=tick)
            got += 1
            if err:
                errors.append(err)
            else:
                merged.merge(LoadResult.from_dict(d))
        except queue.Empty:
            pass
        if on_tick is not None:
            on_tick(sum(progress), max(0.0, perf() - start))
        if perf() > hard_stop or (got < procs and not any(p.is_alive() for p in ps) and out.empty()):
            errors.append("load worker(s) exited without a result")
            break
    for p in ps:
        p.join(2)
        if p.is_alive():
            p.kill()
    if errors:
        raise RuntimeError("; ".join(errors))
    return merged
