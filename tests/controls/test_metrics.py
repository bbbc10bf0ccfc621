from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from fastgw.controls import metrics
from fastgw.controls.metrics import (
    REGISTRY,
    Registry,
    Snapshot,
    SnapshotWriter,
    aggregate,
    render,
    render_all,
)

WORKER = r"""
import sys
from fastgw.controls import metrics as m
n = int(sys.argv[2])
for i in range(n):
    m.observe_request("openai", "gpt-4o", 200, "fast", 0.2, 0.05, 0.0003)
m.observe_usage("openai", "gpt-4o", prompt=10 * n, completion=n, cost_usd=0.01 * n)
m.stream_started()
m.set_pool("openai", in_use=1, idle=n)
m.SnapshotWriter(sys.argv[1]).write_now()
print("ready", flush=True)
sys.stdin.read()  # stay alive until the test closes stdin
"""


def families(text: str) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    out: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for fam in text_string_to_metric_families(text):
        d = out.setdefault(fam.name, {})
        for s in fam.samples:
            d[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(fams: dict, family: str, sample: str, **labels: str) -> float:
    return fams[family].get((sample, tuple(sorted(labels.items()))), 0.0)


def test_exposition_parses_and_is_correct() -> None:
    reg = Registry()
    reg.define("x_requests_total", "counter", "reqs", ("model",))
    reg.define("x_latency_seconds", "histogram", "lat", ("model",), (0.1, 1.0))
    reg.define("x_active", "gauge", "active")
    reg.define("x_dropped_total", "counter", "dropped")
    weird = 'we"ird\\mo\ndel'
    reg.inc("x_requests_total", (weird,), 2)
    for v in (0.05, 0.1, 0.5, 7.0):
        reg.observe("x_latency_seconds", ("m",), v)
    reg.add("x_active", (), 3)
    reg.add("x_active", (), -1)
    text = render(reg.snapshot(), reg.defs).decode()
    fams = families(text)
    assert value(fams, "x_requests", "x_requests_total", model=weird) == 2
    assert (
        value(fams, "x_latency_seconds", "x_latency_seconds_bucket", model="m", le="0.1") == 2
    )  # le is inclusive
    assert value(fams, "x_latency_seconds", "x_latency_seconds_bucket", model="m", le="1.0") == 3
    assert value(fams, "x_latency_seconds", "x_latency_seconds_bucket", model="m", le="+Inf") == 4
    assert value(fams, "x_latency_seconds", "x_latency_seconds_count", model="m") == 4
    assert abs(value(fams, "x_latency_seconds", "x_latency_seconds_sum", model="m") - 7.65) < 1e-9
    assert value(fams, "x_active", "x_active") == 2
    assert value(fams, "x_dropped", "x_dropped_total") == 0  # unlabelled metrics always present
    assert "# TYPE x_latency_seconds histogram" in text


def test_standard_metrics_and_helpers() -> None:
    before = REGISTRY.counters["fastgw_requests_total"].get(("p", "m", "429", "translated"), 0)
    metrics.observe_request("p", "m", 429, "translated", 1.5, None, 0.002)
    metrics.observe_usage("p", "m", prompt=100, completion=20, cached=50, reasoning=5, cost_usd=0.25)
    metrics.observe_upstream_error("p", "timeout")
    metrics.observe_usage_path("injected")
    metrics.set_pool("p", in_use=2, idle=5)

    class FakeLogger:
        depth = 7
        dropped = 3

    reg_text = asyncio.run(metrics.render_metrics(directory="")).decode()
    fams = families(reg_text)
    assert (
        value(
            fams,
            "fastgw_requests",
            "fastgw_requests_total",
            provider="p",
            model="m",
            status="429",
            path="translated",
        )
        == before + 1
    )
    assert value(fams, "fastgw_tokens", "fastgw_tokens_total", provider="p", model="m", kind="cached") >= 50
    assert value(fams, "fastgw_pool_connections", "fastgw_pool_connections", provider="p", state="idle") == 5
    assert (
        value(fams, "fastgw_upstream_errors", "fastgw_upstream_errors_total", provider="p", kind="timeout")
        >= 1
    )
    assert value(fams, "fastgw_overhead_seconds", "fastgw_overhead_seconds_count", path="translated") >= 1
    for name in (
        "fastgw_request_duration_seconds",
        "fastgw_ttfb_seconds",
        "fastgw_cost_usd",
        "fastgw_path",
        "fastgw_active_streams",
        "fastgw_log_queue_depth",
        "fastgw_log_dropped",
        "fastgw_usage_path",
    ):
        assert name in fams, name
    reg = Registry()
    reg.define("fastgw_log_queue_depth", "gauge", "d")
    reg.define("fastgw_log_dropped_total", "counter", "d")
    metrics.watch_request_logger(FakeLogger(), reg)
    fams = families(render(reg.snapshot(), reg.defs).decode())
    assert value(fams, "fastgw_log_queue_depth", "fastgw_log_queue_depth") == 7
    assert value(fams, "fastgw_log_dropped", "fastgw_log_dropped_total") == 3


def test_hot_path_is_cheap() -> None:
    t0 = time.perf_counter()
    for _ in range(100_000):
        metrics.observe_request("openai", "gpt-4o", 200, "fast", 0.1, 0.05, 0.0002)
    assert time.perf_counter() - t0 < 3.0  # ~1-2 us per call; generous for slow CI


def _spawn(directory: str, n: int) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [sys.executable, "-c", WORKER, directory, str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def _stop(p: subprocess.Popen[str]) -> None:
    assert p.stdin is not None
    p.stdin.close()
    p.wait(timeout=10)


def test_workers_aggregate_and_counters_survive_worker_death(tmp_path: Path) -> None:
    d = str(tmp_path)
    procs = [_spawn(d, n) for n in (1, 2, 3)]
    try:
        fams = families(render_all(d, Snapshot(), REGISTRY).decode())
        req = ("fastgw_requests", "fastgw_requests_total")
        labels = dict(provider="openai", model="gpt-4o", status="200", path="fast")
        assert value(fams, *req, **labels) == 6
        assert (
            value(
                fams,
                "fastgw_request_duration_seconds",
                "fastgw_request_duration_seconds_count",
                provider="openai",
                model="gpt-4o",
            )
            == 6
        )
        assert value(fams, "fastgw_active_streams", "fastgw_active_streams") == 3  # gauges summed
        assert (
            value(fams, "fastgw_pool_connections", "fastgw_pool_connections", provider="openai", state="idle")
            == 6
        )
        assert (
            abs(
                value(fams, "fastgw_cost_usd", "fastgw_cost_usd_total", provider="openai", model="gpt-4o")
                - 0.06
            )
            < 1e-9
        )

        _stop(procs[2])  # the worker with 3 requests dies
        fams = families(render_all(d, Snapshot(), REGISTRY).decode())
        assert value(fams, *req, **labels) == 6  # never backwards
        assert value(fams, "fastgw_active_streams", "fastgw_active_streams") == 2  # its gauges are gone
        assert not os.path.exists(os.path.join(d, f"worker-{procs[2].pid}.msgpack"))
        assert os.path.exists(os.path.join(d, "retired.msgpack"))

        procs[2] = _spawn(d, 4)  # its replacement
        _stop(procs[0])
        fams = families(render_all(d, Snapshot(), REGISTRY).decode())
        assert value(fams, *req, **labels) == 10
        again = families(render_all(d, Snapshot(), REGISTRY).decode())
        assert value(again, *req, **labels) == 10  # retiring is done once
    finally:
        for p in procs:
            if p.poll() is None:
                _stop(p)
    fams = families(render_all(d, Snapshot(), REGISTRY).decode())
    assert value(fams, *req, **labels) == 10
    assert value(fams, "fastgw_active_streams", "fastgw_active_streams") == 0


def test_live_registry_and_stale_file_of_our_own_pid(tmp_path: Path) -> None:
    d = str(tmp_path)
    old = Registry()
    old.define("c_total", "counter", "c")
    old.inc("c_total", (), 5)
    SnapshotWriter(d, old).write_now()  # a predecessor that had our pid
    new = Registry()
    new.define("c_total", "counter", "c")
    new.inc("c_total", (), 1)
    merged = aggregate(d, new.snapshot())
    assert dict(merged.counters["c_total"])[()] == 6

    async def run() -> None:
        w = SnapshotWriter(d, new, interval=0.05)
        w.start()
        new.inc("c_total", (), 1)
        await asyncio.sleep(0.2)
        await w.stop()

    asyncio.run(run())
    # as seen from another process: retired 5 + this worker's file 2
    other = Snapshot(pid=-1)
    merged = aggregate(d, other)
    assert dict(merged.counters["c_total"])[()] == 7
