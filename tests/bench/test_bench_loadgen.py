"""Smoke runs of the load generator against the mock (a few hundred requests each)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bench import payloads as P
from bench.gateway import MockProc, free_port
from bench.loadgen import LoadResult, LoadSpec, run_load
from bench.mock_upstream import Knobs
from bench.procstat import TreeMeter, descendants, fd_count, sample_tree, status_kb


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with MockProc(Knobs(chunks=20, chunk_size=8)) as m:
        yield m.port


def spec(port: int, reqs: list, **kw: object) -> LoadSpec:
    kw.setdefault("duration", 3.0)
    kw.setdefault("warmup", 0.0)
    return LoadSpec("127.0.0.1", port, reqs, **kw)  # type: ignore[arg-type]


def test_closed_loop_counts_streams(port: int) -> None:
    req = P.openai_request("h", "chat", "gpt-4o-mini", True)
    r = run_load(spec(port, [req], concurrency=8, max_requests=300))
    assert r.issued == 300 and r.recorded == 300 and r.statuses == {200: 300} and r.errors == {}
    assert r.events == 300 * 23  # role + 20 content + finish + [DONE]
    assert 0 < r.ttfb.percentile(50) <= r.total.percentile(50) and r.total.max < 2_000_000
    assert r.rps > 0 and r.cpu_us_per_req > 0
    s = r.summary()
    assert set(s["ttfb_us"]) >= {"p50", "p90", "p99", "p99.9"}


def test_two_processes_merge_and_mixed_requests(port: int) -> None:
    reqs = [P.openai_request("h", "chat", "m", False), P.anthropic_request("h", "c", True),
            P.gemini_request("h", "g", True), P.openai_request("h", "responses", "m", True)]
    r = run_load(spec(port, reqs, concurrency=4, procs=2, max_requests=400))
    assert r.procs == 2 and r.issued == 400 and r.statuses == {200: 400}
    assert LoadResult.from_dict(r.to_dict()).summary() == r.summary()


def test_open_loop_rate_and_latency_from_intended_time(port: int) -> None:
    req = P.openai_request("h", "chat", "m", True, extra={"x-mock-ttfb-ms": "20"})
    r = run_load(spec(port, [req], mode="open", rate=200, duration=1.0, warmup=0.2))
    assert 180 <= r.completed <= 215 and r.errors == {}
    assert 18_000 <= r.ttfb.percentile(50) < 80_000
    # a server slower than the arrival rate: latency grows with queueing, it is not hidden
    slow = P.openai_request("h", "chat", "m", False, extra={"x-mock-ttfb-ms": "50"})
    r = run_load(spec(port, [slow], mode="open", rate=100, duration=1.0, max_conns=1, timeout=1.0))
    assert r.total.percentile(99) > 300_000 and r.issued < 60
    assert r.errors["unsent_backlog"] == 100 - r.issued


def test_errors_drops_timeouts(port: int) -> None:
    err = P.openai_request("h", "chat", "m", False, extra={"x-mock-error-rate": "1", "x-mock-error-status": "503"})
    r = run_load(spec(port, [err], concurrency=2, max_requests=50))
    assert r.errors == {"http_503": 50} and r.statuses == {503: 50}
    drop = P.openai_request("h", "chat", "m", True, extra={"x-mock-drop-after": "3"})
    r = run_load(spec(port, [drop], concurrency=2, max_requests=50))
    assert r.errors.get("dropped") == 50 and r.issued == 50
    slow = P.openai_request("h", "chat", "m", True, extra={"x-mock-ttfb-ms": "3000"})
    r = run_load(spec(port, [slow], concurrency=2, duration=0.5, timeout=0.5))
    assert r.errors.get("timeout", 0) >= 2


def test_paced_stream_gaps(port: int) -> None:
    req = P.openai_request("h", "chat", "m", True, extra={"x-mock-ttfb-ms": "30", "x-mock-interval-ms": "10",
                                                          "x-mock-chunks": "5"})
    r = run_load(spec(port, [req], concurrency=4, max_requests=12))
    assert r.recorded == 12
    assert 28_000 <= r.ttfb.percentile(50) < 60_000 and 65_000 <= r.total.percentile(50) < 120_000
    assert 8_000 <= r.gap.percentile(50) < 40_000


def test_connection_refused_is_bounded() -> None:
    r = run_load(spec(free_port(), [P.openai_request("h", "chat", "m", False)], concurrency=2, duration=0.3))
    assert r.recorded == 0 and any(k.startswith("connect_") for k in r.errors)


def test_procstat_reads_a_process_tree(port: int) -> None:
    me = os.getpid()
    assert me in descendants(me) and status_kb(me, "VmRSS") > 0 and fd_count(me) > 0
    s = sample_tree(me)
    assert s.rss_kb > 0 and s.hwm_kb >= status_kb(me, "VmRSS") // 2
    m = TreeMeter(me).start()
    sum(i * i for i in range(300_000))
    out = m.stop()
    assert out["cpu_s"] >= 0 and out["peak_rss_kb"] > 0
