"""Metrics: a tiny in-process registry, Prometheus text output, cross-worker aggregation.

Hot path: the ``observe_*`` helpers are a few dict operations (label tuples as keys,
histograms as per-bucket counts found by ``bisect``), no locks, no I/O. Call them from
the event loop thread.

Several workers (granian processes): each worker runs a :class:`SnapshotWriter`, which
every ``interval`` s copies its registry (in the loop, cheap) and writes it with msgpack
atomically (temp file + ``os.replace``, in a thread) to
``$FASTGW_METRICS_DIR/worker-<pid>.msgpack``. ``/metrics`` in any worker answers with
:func:`render_metrics`, which merges every worker's latest snapshot with its own live
registry:

* counters and histograms are summed;
* gauges are summed too (pool connections in use / idle, active streams and log queue
  depth are additive across workers);
* a dead worker's file (pid gone, or our pid with another boot id) is folded, under an
  ``flock``, into ``retired.msgpack`` - counters and histograms only, its gauges are
  dropped - then removed, so totals never go backwards when workers restart.

Counts a worker made since its last snapshot are missing from other workers' answers
(at most ``interval`` s old) and lost if it is killed hard; a graceful ``stop()`` writes
a final snapshot. Without ``FASTGW_METRICS_DIR`` (single process) only the live
registry is rendered.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import math
import os
import secrets
import tempfile
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable

import msgspec

ENV_DIR = "FASTGW_METRICS_DIR"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

Labels = tuple[str, ...]


class MetricDef(msgspec.Struct, frozen=True):
    name: str
    kind: str  # counter | gauge | histogram
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


class Snapshot(msgspec.Struct):
    pid: int = 0
    boot: str = ""
    ts: float = 0.0
    counters: dict[str, list[tuple[Labels, float]]] = {}
    gauges: dict[str, list[tuple[Labels, float]]] = {}
    hists: dict[str, list[tuple[Labels, list[float]]]] = {}  # bucket counts..., +Inf, sum


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Snapshot)


class Registry:
    def __init__(self) -> None:
        self.defs: dict[str, MetricDef] = {}
        self.counters: dict[str, dict[Labels, float]] = {}
        self.gauges: dict[str, dict[Labels, float]] = {}
        self.hists: dict[str, dict[Labels, list[float]]] = {}
        self.collectors: list[Callable[[], None]] = []
        self.boot = secrets.token_hex(8)

    def define(
        self, name: str, kind: str, help: str, labels: Iterable[str] = (), buckets: Iterable[float] = ()
    ) -> None:
        self.defs[name] = MetricDef(name, kind, help, tuple(labels), tuple(sorted(buckets)))
        {"counter": self.counters, "gauge": self.gauges, "histogram": self.hists}[kind].setdefault(name, {})

    def inc(self, name: str, labels: Labels = (), value: float = 1.0) -> None:
        d = self.counters[name]
        d[labels] = d.get(labels, 0.0) + value

    def set_counter(self, name: str, labels: Labels, value: float) -> None:
        """Mirror an absolute, monotonic count kept elsewhere (e.g. ``logger.dropped``)."""
        self.counters[name][labels] = float(value)

    def set(self, name: str, labels: Labels, value: float) -> None:
        self.gauges[name][labels] = float(value)

    def add(self, name: str, labels: Labels = (), value: float = 1.0) -> None:
        d = self.gauges[name]
        d[labels] = d.get(labels, 0.0) + value

    def observe(self, name: str, labels: Labels, value: float) -> None:
        d = self.hists[name]
        h = d.get(labels)
        buckets = self.defs[name].buckets
        if h is None:
            h = d[labels] = [0.0] * (len(buckets) + 2)
        h[bisect_left(buckets, value)] += 1
        h[-1] += value

    def collect(self) -> None:
        for fn in self.collectors:
            with contextlib.suppress(Exception):
                fn()

    def snapshot(self) -> Snapshot:
        """Copy of the current values (run collectors first). Call in the loop thread."""
        self.collect()
        return Snapshot(
            pid=os.getpid(),
            boot=self.boot,
            ts=time.time(),
            counters={n: list(d.items()) for n, d in self.counters.items()},
            gauges={n: list(d.items()) for n, d in self.gauges.items()},
            hists={n: [(k, list(v)) for k, v in d.items()] for n, d in self.hists.items()},
        )


def merge(into: Snapshot, other: Snapshot, *, gauges: bool = True) -> None:
    """Add ``other`` into ``into`` (counters, histograms, and gauges unless told not to)."""
    for attr in ("counters", "gauges") if gauges else ("counters",):
        dst = getattr(into, attr)
        for name, items in getattr(other, attr).items():
            cur = dict(dst.get(name, ()))
            for labels, v in items:
                labels = tuple(labels)
                cur[labels] = cur.get(labels, 0.0) + v
            dst[name] = list(cur.items())
    for name, items in other.hists.items():
        hcur = {tuple(k): v for k, v in into.hists.get(name, ())}
        for labels, vals in items:
            labels = tuple(labels)
            prev = hcur.get(labels)
            if prev is None:
                hcur[labels] = list(vals)
            elif len(prev) == len(vals):
                hcur[labels] = [a + b for a, b in zip(prev, vals, strict=True)]
        into.hists[name] = list(hcur.items())


# -- exposition ---------------------------------------------------------------------


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


def _labelstr(names: tuple[str, ...], values: Labels, extra: str = "") -> str:
    parts = [f'{n}="{_esc(str(v))}"' for n, v in zip(names, values, strict=False)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def render(snap: Snapshot, defs: dict[str, MetricDef]) -> bytes:
    """Prometheus text exposition (format 0.0.4) of a snapshot."""
    out: list[str] = []
    for name, d in defs.items():
        out.append(f"# HELP {name} {d.help}")
        out.append(f"# TYPE {name} {d.kind}")
        if d.kind == "histogram":
            for labels, vals in sorted(snap.hists.get(name, ())):
                if len(vals) != len(d.buckets) + 2:
                    continue
                acc = 0.0
                for le, c in zip((*d.buckets, math.inf), vals[:-1], strict=True):
                    acc += c
                    le_label = 'le="' + ("+Inf" if math.isinf(le) else repr(float(le))) + '"'
                    out.append(f"{name}_bucket{_labelstr(d.labels, labels, le_label)} {_num(acc)}")
                ls = _labelstr(d.labels, labels)
                out.append(f"{name}_sum{ls} {_num(vals[-1])}")
                out.append(f"{name}_count{ls} {_num(acc)}")
        else:
            src = snap.counters if d.kind == "counter" else snap.gauges
            items = sorted(src.get(name, ()))
            if not items and not d.labels:
                items = [((), 0.0)]
            for labels, v in items:
                out.append(f"{name}{_labelstr(d.labels, labels)} {_num(v)}")
    return ("\n".join(out) + "\n").encode()


# -- cross-worker files -------------------------------------------------------------


def _read(path: str) -> Snapshot | None:
    try:
        with open(path, "rb") as f:
            return _dec.decode(f.read())
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def _write_atomic(path: str, data: bytes) -> None:
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _locked(directory: str):  # type: ignore[no-untyped-def]
    fd = os.open(os.path.join(directory, ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def worker_path(directory: str, pid: int | None = None) -> str:
    return os.path.join(directory, f"worker-{os.getpid() if pid is None else pid}.msgpack")


def aggregate(directory: str, live: Snapshot | None = None) -> Snapshot:
    """Merge all worker snapshots in ``directory`` (+ ``live`` for this process), retiring
    dead workers' files. Blocking file I/O: run it in a thread."""
    total = Snapshot()
    me = os.getpid()
    with _locked(directory):
        retired_path = os.path.join(directory, "retired.msgpack")
        retired = _read(retired_path) or Snapshot()
        retired_changed = False
        for fn in os.listdir(directory):
            if not (fn.startswith("worker-") and fn.endswith(".msgpack")):
                continue
            path = os.path.join(directory, fn)
            snap = _read(path)
            if snap is None:
                continue
            ours = live is not None and snap.pid == live.pid == me
            stale = ours and snap.boot != live.boot  # type: ignore[union-attr]
            if ours and not stale:
                continue  # the live registry is fresher
            if stale or not _alive(snap.pid):
                merge(retired, snap, gauges=False)
                retired_changed = True
                os.unlink(path)
            else:
                merge(total, snap)
        if retired_changed:
            retired.gauges = {}
            _write_atomic(retired_path, _enc.encode(retired))
    merge(total, retired, gauges=False)
    if live is not None:
        merge(total, live)
    return total


def render_all(
    directory: str | None, live: Snapshot | None = None, registry: Registry | None = None
) -> bytes:
    """Text of all workers' metrics (blocking; ``live`` must be taken in the loop thread)."""
    reg = registry or REGISTRY
    if not directory:
        return render(live or reg.snapshot(), reg.defs)
    return render(aggregate(directory, live), reg.defs)


async def render_metrics(directory: str | None = None, registry: Registry | None = None) -> bytes:
    """The ``/metrics`` body: live registry snapshot in the loop, file merging in a thread."""
    reg = registry or REGISTRY
    directory = directory if directory is not None else os.environ.get(ENV_DIR)
    live = reg.snapshot()
    if not directory:
        return render(live, reg.defs)
    return await asyncio.to_thread(render_all, directory, live, reg)


class SnapshotWriter:
    """Writes this worker's snapshot every ``interval`` s (see the module docstring)."""

    def __init__(self, directory: str, registry: Registry | None = None, interval: float = 1.0) -> None:
        self.directory = directory
        self.registry = registry or REGISTRY
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self.errors = 0

    def write_now(self, snap: Snapshot | None = None) -> None:
        """Blocking write of ``snap`` (default: a snapshot taken now)."""
        snap = snap or self.registry.snapshot()
        os.makedirs(self.directory, exist_ok=True)
        _write_atomic(worker_path(self.directory, snap.pid), _enc.encode(snap))

    def start(self) -> None:
        if self._task is None:
            os.makedirs(self.directory, exist_ok=True)
            # A predecessor with our pid (restarted worker) left a file: retire it first.
            old = _read(worker_path(self.directory))
            if old is not None and old.boot != self.registry.boot:
                aggregate(self.directory, self.registry.snapshot())
            self._task = asyncio.get_running_loop().create_task(self._run(), name="fastgw-metrics-snap")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                snap = self.registry.snapshot()
                await asyncio.to_thread(self.write_now, snap)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.errors += 1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        snap = self.registry.snapshot()
        await asyncio.to_thread(self.write_now, snap)


# -- the standard metrics and the helpers the gateway calls ---------------------------

REGISTRY = Registry()
_R = REGISTRY
_R.define(
    "fastgw_requests_total",
    "counter",
    "Requests by provider, model, status and path.",
    ("provider", "model", "status", "path"),
)
_R.define(
    "fastgw_path_total",
    "counter",
    "Requests by gateway path (fast|rewritten|translated|passthrough).",
    ("path",),
)
_R.define(
    "fastgw_request_duration_seconds",
    "histogram",
    "Total request time.",
    ("provider", "model"),
    LATENCY_BUCKETS,
)
_R.define(
    "fastgw_ttfb_seconds", "histogram", "Time to first response byte.", ("provider", "model"), LATENCY_BUCKETS
)
_R.define(
    "fastgw_overhead_seconds",
    "histogram",
    "Time spent in the gateway, upstream wait excluded.",
    ("path",),
    OVERHEAD_BUCKETS,
)
_R.define(
    "fastgw_tokens_total",
    "counter",
    "Tokens by kind (prompt|completion|cached|reasoning).",
    ("provider", "model", "kind"),
)
_R.define("fastgw_cost_usd_total", "counter", "Cost in USD of priced requests.", ("provider", "model"))
_R.define("fastgw_upstream_errors_total", "counter", "Upstream errors by kind.", ("provider", "kind"))
_R.define(
    "fastgw_pool_connections",
    "gauge",
    "Upstream pool connections (state=in_use|idle).",
    ("provider", "state"),
)
_R.define("fastgw_active_streams", "gauge", "Streams being relayed now.")
_R.define("fastgw_log_queue_depth", "gauge", "Request log records waiting to be written.")
_R.define("fastgw_log_dropped_total", "counter", "Request log records dropped because the queue was full.")
_R.define(
    "fastgw_usage_path_total",
    "counter",
    "How usage was obtained (body|client|injected|none|responses).",
    ("path",),
)
_R.define(
    "fastgw_dropped_params_total",
    "counter",
    "Request fields a translation dropped (they only steer the original provider's machinery).",
    ("param",),
)

_R.define(
    "fastgw_event_loop_lag_seconds",
    "histogram",
    "How late a worker's periodic timer fired (event-loop lag).",
    (),
    (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

_requests = _R.counters["fastgw_requests_total"]
_paths = _R.counters["fastgw_path_total"]


def observe_request(
    provider: str,
    model: str,
    status: int,
    path: str,
    duration_s: float,
    ttfb_s: float | None = None,
    overhead_s: float | None = None,
) -> None:
    """Count one finished request and its timings (seconds)."""
    k = (provider, model, str(status), path)
    _requests[k] = _requests.get(k, 0.0) + 1
    _paths[(path,)] = _paths.get((path,), 0.0) + 1
    pm = (provider, model)
    _R.observe("fastgw_request_duration_seconds", pm, duration_s)
    if ttfb_s is not None:
        _R.observe("fastgw_ttfb_seconds", pm, ttfb_s)
    if overhead_s is not None:
        _R.observe("fastgw_overhead_seconds", (path,), overhead_s)


def observe_usage(
    provider: str,
    model: str,
    prompt: int = 0,
    completion: int = 0,
    cached: int = 0,
    reasoning: int = 0,
    cost_usd: float | None = None,
) -> None:
    for kind, n in (
        ("prompt", prompt),
        ("completion", completion),
        ("cached", cached),
        ("reasoning", reasoning),
    ):
        if n:
            _R.inc("fastgw_tokens_total", (provider, model, kind), n)
    if cost_usd is not None:
        _R.inc("fastgw_cost_usd_total", (provider, model), cost_usd)


def observe_upstream_error(provider: str, kind: str) -> None:
    """kind: e.g. connect | timeout | protocol | status_5xx | status_429 | reset."""
    _R.inc("fastgw_upstream_errors_total", (provider, kind))


def observe_usage_path(path: str) -> None:
    _R.inc("fastgw_usage_path_total", (path,))


def observe_dropped(param: str) -> None:
    _R.inc("fastgw_dropped_params_total", (param,))


def observe_loop_lag(seconds: float) -> None:
    _R.observe("fastgw_event_loop_lag_seconds", (), seconds)


def stream_started() -> None:
    _R.add("fastgw_active_streams", (), 1)


def stream_ended() -> None:
    _R.add("fastgw_active_streams", (), -1)


def set_pool(provider: str, in_use: int, idle: int) -> None:
    _R.set("fastgw_pool_connections", (provider, "in_use"), in_use)
    _R.set("fastgw_pool_connections", (provider, "idle"), idle)


def register_collector(fn: Callable[[], None], registry: Registry | None = None) -> None:
    """``fn`` runs before every snapshot/render to refresh gauges (pool stats...)."""
    (registry or REGISTRY).collectors.append(fn)


def watch_request_logger(logger: object, registry: Registry | None = None) -> None:
    """Export a RequestLogger's ``depth`` and ``dropped`` at each snapshot."""
    reg = registry or REGISTRY

    def collect() -> None:
        reg.set("fastgw_log_queue_depth", (), logger.depth)  # type: ignore[attr-defined]
        reg.set_counter("fastgw_log_dropped_total", (), logger.dropped)  # type: ignore[attr-defined]

    reg.collectors.append(collect)
