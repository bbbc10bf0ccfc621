"""``python -m bench floor``: what the design card costs before fastgw does anything.

Meters, on one mock and the same load, the gateway CPU per request (process tree, from
/proc) of three servers, each with one worker, alternating rounds so drift hits all of them:

* ``hello``: granian ASGI answering a fixed body (:func:`bench.floor_apps.hello`);
* ``relay``: granian ASGI relaying over fastgw's pool and httpcore/h11 connection, with no
  gateway logic (:class:`bench.floor_apps.Relay`): the floor of any gateway on this card;
* ``fastgw``: ``fastgw serve`` with its default config (request log, usage, metrics on).

``fastgw - relay`` is what fastgw's own logic costs; ``relay`` alone is what a target
below it would have to beat without leaving granian's ASGI interface or h11.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import payloads as P
from bench.gateway import OPENAI_MODEL, GatewayProc, MockProc, gateway_config
from bench.loadgen import LoadSpec, run_load
from bench.procstat import TreeMeter
from bench.report import text_table
from bench.scenarios import PROFILES

SERVERS = ("hello", "relay", "fastgw")
SHAPES = {"chat_nonstream": False, "chat_stream": True}


def _server(name: str, mock_port: int) -> GatewayProc:
    if name == "fastgw":
        return GatewayProc(gateway_config(mock_port, translated=False))
    # The server runs in a scratch directory: let it import this checkout's ``bench``.
    root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, FLOOR_UPSTREAM_PORT=str(mock_port), PYTHONPATH=path)
    return GatewayProc("", cmd=[sys.executable, "-m", "bench.floor_apps", name], env=env)


def measure(duration: float = 4.0, concurrency: int = 64, rounds: int = 2,
            servers: tuple[str, ...] = SERVERS) -> list[dict[str, Any]]:
    """One row per (server, shape, round)."""
    rows: list[dict[str, Any]] = []
    with MockProc(PROFILES["fast"]) as mock:
        for rnd in range(rounds):
            for name in servers:
                with _server(name, mock.port) as gw:
                    for shape, stream in SHAPES.items():
                        reqs = [P.openai_request(f"127.0.0.1:{gw.port}", "chat", OPENAI_MODEL, stream)]
                        spec = LoadSpec("127.0.0.1", gw.port, reqs, concurrency=concurrency, duration=duration,
                                        warmup=0.5)
                        run_load(replace(spec, duration=0.5, warmup=0.0))  # warm the server before metering it
                        meter = TreeMeter(gw.pid).start()
                        res = run_load(spec)
                        m = meter.stop()
                        rows.append({"server": name, "shape": shape, "round": rnd, "rps": round(res.rps),
                                     "errors": res.error_count, "sse_events": res.events,
                                     "cpu_us_per_req": round(m["cpu_s"] * 1e6 / max(1, res.issued), 1)})
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean CPU us/request per shape and server."""
    out: dict[str, dict[str, float]] = {}
    for shape in SHAPES:
        for name in SERVERS:
            vals = [r["cpu_us_per_req"] for r in rows if r["shape"] == shape and r["server"] == name]
            if vals:
                out.setdefault(shape, {})[name] = round(sum(vals) / len(vals), 1)
    return out


def render(rows: list[dict[str, Any]]) -> str:
    body = [[r["shape"], r["server"], str(r["round"]), str(r["rps"]), f"{r['cpu_us_per_req']:.1f}", str(r["errors"])]
            for r in rows]
    text = text_table(body, ["shape", "server", "round", "req/s", "cpu us/req", "errors"])
    lines = [text, "", "means (cpu us/req):"]
    for shape, by in summarize(rows).items():
        parts = ", ".join(f"{k} {v:.1f}" for k, v in by.items())
        extra = f"; fastgw's own logic {by['fastgw'] - by['relay']:+.1f}" if {"fastgw", "relay"} <= set(by) else ""
        lines.append(f"  {shape}: {parts}{extra}")
    return "\n".join(lines)
