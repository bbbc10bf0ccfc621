"""Two gateways side by side on one mock, runs alternating in counterbalanced pairs (A B, B A,
A B, ...): two builds (compare-revs) or one build under two ``--controls`` modes
(``python -m bench ab``).

Each repeat is one pair, so the paired change of a repeat compares runs made back to back. The
side that goes first swaps from pair to pair: a cost that falls on whichever run comes second
(or first) in a pair, and a steady drift of the machine, fall on both sides alike instead of
reading as a difference between them."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from bench import payloads as P
from bench.gateway import GatewayProc, MockProc
from bench.matrix import Matrix, MatrixConfig, Progress
from bench.scenarios import PROFILES


@dataclass
class Build:
    label: str
    cmd: list[str]
    env: dict[str, str] | None = None
    cwd: str | None = None
    controls: str | None = None  # this side's --controls mode (None: the config's)


def run_ab(a: Build, b: Build, cfg: MatrixConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Benchmark builds ``a`` and ``b`` through the same scenarios; two matrix-shaped results."""
    ms = [Matrix(replace(cfg, gateway_cmd=x.cmd, gateway_env=x.env, gateway_cwd=x.cwd, label=x.label,
                         controls=x.controls or cfg.controls))
          for x in (a, b)]
    progress = Progress(len(cfg.workers) * len(ms[0].scenarios) * cfg.repeats * 2)
    for m in ms:
        m.progress = progress
    t0 = time.time()
    try:
        for m in ms:
            m.start_redis()
        _alternate(ms, (a, b), cfg, progress)
    finally:
        for m in ms:
            m.stop_redis()
    return ms[0].result(t0), ms[1].result(t0)


def pair_order(repeat: int) -> tuple[int, int]:
    """Which side runs first in pair ``repeat``: A (0) in even pairs, B (1) in odd ones."""
    return (0, 1) if repeat % 2 == 0 else (1, 0)


def _alternate(ms: list[Matrix], builds: tuple[Build, Build], cfg: MatrixConfig, progress: Progress) -> None:
    a, b = builds
    for w in cfg.workers:
        for m in ms:
            m._w = w
        for profile in ("fast", "paced"):
            scs = [s for s in ms[0].scenarios if s.profile == profile]
            if not scs:
                continue
            with MockProc(PROFILES[profile], cfg.mock_procs) as mock:
                gws: list[GatewayProc | None] = []
                sups: list[dict[str, bool]] = []
                try:
                    for m, x in zip(ms, (a, b), strict=True):
                        progress.note(f"starting {x.label}")
                        gw, sup = m._start_gateway(mock.port, w)
                        gws.append(gw)
                        sups.append(sup)
                    for sc in scs:
                        runs: list[list[dict[str, Any]]] = [[], []]
                        for rep in range(cfg.repeats):
                            for i in pair_order(rep):
                                m, gw = ms[i], gws[i]
                                if gw is None or not gw.alive() or (sc.needs and not sups[i].get(sc.needs)):
                                    progress.n += 1
                                    continue
                                P.BENCH_KEY = m.bench_key
                                reqs = sc.gateway(f"127.0.0.1:{gw.port}")
                                runs[i].append(m._run(sc, "gateway", gw.port, reqs, gw.pid))
                        for m, r in zip(ms, runs, strict=True):
                            m._entry(sc, "gateway", r, status="ok" if r else "n/a")
                finally:
                    for gw in gws:
                        if gw is not None:
                            gw.close()
