"""Self-check: the mock's own ceiling and the load generator's cost per request.

Runs the loadgen directly against the mock for a few scenario shapes and loadgen/mock process
counts, metering the mock's process tree CPU from /proc. ``1e6 / mock_cpu_us_per_req`` is the
mock's ceiling per core; ``loadgen_cpu_us_per_req`` is what the generator spends per request.
Both are to be compared with the gateway's ``gw cpu us/req`` from the matrix.
"""

from __future__ import annotations

from typing import Any

from bench import payloads as P
from bench.gateway import MockProc
from bench.loadgen import LoadSpec, run_load
from bench.procstat import TreeMeter
from bench.report import text_table
from bench.scenarios import PROFILES

SHAPES = {
    "chat_nonstream": lambda h: [P.openai_request(h, "chat", "gpt-4o-mini", False)],
    "chat_stream": lambda h: [P.openai_request(h, "chat", "gpt-4o-mini", True)],
    "responses_stream": lambda h: [P.openai_request(h, "responses", "gpt-4o-mini", True)],
}


def measure(duration: float = 3.0, concurrency: int = 64, combos: list[tuple[int, int]] | None = None,
            shapes: list[str] | None = None) -> list[dict[str, Any]]:
    out = []
    for mock_procs, gen_procs in combos or [(1, 1), (2, 2)]:
        with MockProc(PROFILES["fast"], mock_procs) as mock:
            for name in shapes or list(SHAPES):
                reqs = SHAPES[name](f"127.0.0.1:{mock.port}")
                meter = TreeMeter(mock.pid).start()
                res = run_load(LoadSpec("127.0.0.1", mock.port, reqs, concurrency=concurrency, duration=duration,
                                        warmup=0.5, procs=gen_procs))
                m = meter.stop()
                out.append({
                    "shape": name, "mock_procs": mock_procs, "loadgen_procs": gen_procs, "concurrency": concurrency,
                    "rps": round(res.rps), "errors": res.error_count,
                    "mock_cpu_us_per_req": round(m["cpu_s"] * 1e6 / max(1, res.issued), 2),
                    "loadgen_cpu_us_per_req": round(res.cpu_us_per_req, 2),
                    "ttfb_p50_us": res.ttfb.percentile(50),
                })
    return out


def render(rows: list[dict[str, Any]]) -> str:
    cols = ["shape", "mock procs", "loadgen procs", "c", "req/s", "mock cpu us/req", "mock ceiling/core",
            "loadgen cpu us/req", "ttfb p50 ms", "errors"]
    body = [[r["shape"], str(r["mock_procs"]), str(r["loadgen_procs"]), str(r["concurrency"]), str(r["rps"]),
             f"{r['mock_cpu_us_per_req']:.1f}",
             f"{1e6 / r['mock_cpu_us_per_req']:.0f}/s" if r["mock_cpu_us_per_req"] else "-",
             f"{r['loadgen_cpu_us_per_req']:.1f}", f"{r['ttfb_p50_us'] / 1000:.2f}", str(r["errors"])] for r in rows]
    return text_table(body, cols)
