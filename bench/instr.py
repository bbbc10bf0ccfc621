"""Instructions per request: a feature's cost counted, not timed.

``python -m bench instr A B``: for each scenario, one gateway per ``--controls`` mode runs its
worker under valgrind's callgrind; after a warm-up, the worker's counters are zeroed, a fixed
number of requests goes through, and the counters are dumped. The figure is the worker's
user-space instructions (``Ir``) per request. On a quiet machine two counts of one build agree
to a fraction of a per cent, where CPU time on a shared VM moves by 20 % or more, so a cost of a
few per cent can be read in one run. Timers and how requests batch still depend on time, so a
machine busy with other work moves the count by a few per cent: run it alone, and run
``instr A A`` to see the spread. It leaves out what instructions do not show: time in
the kernel (socket reads and writes, epoll), cache misses, and the mock's and Redis's work.
Everything else (the loop, granian, h11, msgspec, timers and background tasks of the worker)
is in it.

Needs ``valgrind`` (Debian's package) with ``callgrind_control``.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import payloads as P
from bench.gateway import (
    KEYED_CONTROLS,
    LIMIT_ARGS,
    REDIS_CONTROLS,
    GatewayProc,
    MockProc,
    RedisProc,
    create_virtual_key,
    default_gateway_cmd,
    gateway_config,
)
from bench.loadgen import run_load
from bench.loadtypes import LoadSpec
from bench.scenarios import PROFILES, base_scenarios

SCENARIOS = ("chat_nonstream", "chat_stream")
_TOTAL_RE = re.compile(rb"^(?:summary|totals):\s+(\d+)", re.M)


def available() -> str | None:
    """None when callgrind can be used here, else why not."""
    missing = [t for t in ("valgrind", "callgrind_control") if shutil.which(t) is None]
    return f"not installed: {', '.join(missing)} (Debian package valgrind)" if missing else None


def total_ir(dump: bytes) -> int:
    """The instruction count of a callgrind dump (its ``summary:`` or ``totals:`` line)."""
    m = _TOTAL_RE.search(dump)
    if m is None:
        raise ValueError("no summary or totals line in the callgrind dump")
    return int(m.group(1))


@dataclass
class InstrConfig:
    modes: tuple[str, str]
    scenarios: tuple[str, ...] = SCENARIOS
    requests: int = 1000
    warmup: int = 300
    concurrency: int = 8
    gateway_cmd: list[str] | None = None


def measure(cfg: InstrConfig, progress: Any = print) -> dict[str, Any]:
    """Both modes through every scenario; a result with one entry per (scenario, mode)."""
    by_name = {s.name: s for s in base_scenarios(cfg.concurrency)}
    unknown = [s for s in cfg.scenarios if s not in by_name or by_name[s].profile != "fast"]
    if unknown:
        raise ValueError(f"instr runs throughput scenarios only; unknown here: {', '.join(unknown)}")
    entries = []
    redis = RedisProc().start() if any(m in REDIS_CONTROLS for m in cfg.modes) else None
    try:
        with MockProc(PROFILES["fast"]) as mock:
            for name in cfg.scenarios:
                for mode in cfg.modes:
                    e = _one(cfg, by_name[name], mode, mock.port, redis.url if redis else None)
                    progress(f"{name} {mode}: {e['ir_per_req']:,.0f} instructions/request "
                             f"({e['requests']} requests, {e['errors']} errors)")
                    entries.append(e)
    finally:
        if redis is not None:
            redis.stop()
    return {"meta": {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "modes": list(cfg.modes),
                     "requests": cfg.requests, "warmup": cfg.warmup, "concurrency": cfg.concurrency,
                     "metric": "callgrind Ir of the gateway worker per request"},
            "entries": entries}


def _one(cfg: InstrConfig, sc: Any, mode: str, mock_port: int, redis_url: str | None) -> dict[str, Any]:
    cmd = cfg.gateway_cmd or default_gateway_cmd()
    out = Path(tempfile.mkdtemp(prefix="fastgw-instr-"))
    vg = ["valgrind", "--tool=callgrind", "--trace-children=yes", f"--callgrind-out-file={out}/cg.%p",
          "--dump-instr=no", "--dump-line=no", "--collect-jumps=no"]
    gw = GatewayProc(gateway_config(mock_port, False, mode, redis_url if mode in REDIS_CONTROLS else None),
                     1, [*vg, *cmd])
    try:
        if mode in KEYED_CONTROLS:
            P.BENCH_KEY = create_virtual_key(cmd, f"sqlite:///{gw.cwd}/fastgw.db", None,
                                             LIMIT_ARGS if mode.startswith("limits") else None)
        gw.start(timeout=300)
        reqs = sc.gateway(f"127.0.0.1:{gw.port}")
        _load(gw.port, reqs, cfg.warmup, cfg.concurrency)
        worker = _worker_pid(gw.pid)
        _control("-z", worker)
        res = _load(gw.port, reqs, cfg.requests, cfg.concurrency)
        _control("-d", worker)
        dumps = sorted(glob.glob(f"{out}/cg.{worker}.*"), key=os.path.getmtime)
        if not dumps:
            raise RuntimeError(f"callgrind wrote no dump for worker {worker}")
        ir = total_ir(Path(dumps[-1]).read_bytes())
    finally:
        P.BENCH_KEY = "sk-bench"
        gw.close()
        shutil.rmtree(out, ignore_errors=True)
    s = res.summary()
    return {"scenario": sc.name, "mode": mode, "requests": res.issued, "warmup": cfg.warmup,
            "concurrency": cfg.concurrency, "errors": s["errors"], "ir": ir,
            "ir_per_req": round(ir / max(1, res.issued), 1)}


def _load(port: int, reqs: list[Any], n: int, concurrency: int) -> Any:
    spec = LoadSpec(host="127.0.0.1", port=port, requests=reqs, concurrency=min(concurrency, n),
                    duration=3600, warmup=0, max_requests=n, timeout=120)
    res = run_load(spec)
    if res.issued != n:
        raise RuntimeError(f"{res.issued} of {n} requests issued")
    return res


def _worker_pid(server_pid: int) -> int:
    """The one worker granian forked (the process that serves requests)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = subprocess.run(["pgrep", "-P", str(server_pid)], capture_output=True, text=True).stdout.split()
        if out:
            return int(out[-1])
        time.sleep(0.2)
    raise RuntimeError("no gateway worker process found")


def _control(flag: str, pid: int) -> None:
    subprocess.run(["callgrind_control", flag, str(pid)], check=True, capture_output=True, timeout=120)


def by_scenario(rows: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]], float | None]]:
    """Per scenario, in run order: its rows (one per mode) and the last mode's count against the
    first's (None without two counts). A and B may be one mode: two counts of the same build show
    how well the figure repeats."""
    out = []
    for sc in dict.fromkeys(r["scenario"] for r in rows):
        got = [r for r in rows if r["scenario"] == sc]
        first, last = got[0]["ir_per_req"], got[-1]["ir_per_req"]
        out.append((sc, got, last / first - 1 if len(got) > 1 and first else None))
    return out


def render(result: dict[str, Any]) -> str:
    """Per scenario: each mode's instructions per request and B against A."""
    a, b = result["meta"]["modes"]
    lines = [f"instructions per request (callgrind Ir, gateway worker; {result['meta']['requests']} requests "
             f"after {result['meta']['warmup']}, c={result['meta']['concurrency']})",
             f"{'scenario':<16} {a:>14} {b:>14} {'change':>8}  errors"]
    for sc, (ea, eb), change in by_scenario(result["entries"]):
        lines.append(f"{sc:<16} {ea['ir_per_req']:>14,.0f} {eb['ir_per_req']:>14,.0f} {change or 0.0:>+8.1%}  "
                     f"{ea['errors']}/{eb['errors']}")
    return "\n".join(lines)
