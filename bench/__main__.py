"""``python -m bench``: the scenario matrix; ``python -m bench compare A.json B.json``;
``python -m bench report RESULT.json``: re-render a result (table, chart);
``python -m bench ceiling``: the mock's own ceiling and the loadgen's cost per request;
``python -m bench ab OFF ON [matrix options]``: one build under two ``--controls`` modes, runs alternating;
``python -m bench instr A B``: instructions per request of the gateway worker under two ``--controls`` modes (callgrind);
``python -m bench floor``: the design card's own cost (granian hello, a bare h11 relay) beside fastgw;
``python -m bench index [--reference RESULT.json]``: bench/results/INDEX.md and the README's figures."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from bench.report import RESULTS_DIR, now, write_rows

CONTROLS = ("default", "off", "all", "limits", "limits-redis", "cache", "cache-redis")


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def matrix_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description="fastgw benchmark matrix: direct-to-mock vs "
                                "through fastgw, alternating runs. Subcommands: compare A.json B.json | report R.json | ceiling | floor | "
                                "index")
    p.add_argument("--quick", action="store_true", help="smoke preset: short runs, one repeat, c=16")
    p.add_argument("--concurrency", type=_ints, default=None, help="comma list (default 1,64)")
    p.add_argument("--workers", type=_ints, default=None, help="gateway worker counts, comma list (default 1)")
    p.add_argument("--duration", type=float, default=None, help="seconds measured per run (default 5)")
    p.add_argument("--warmup", type=float, default=None, help="seconds of warm-up per run, not measured (default 1)")
    p.add_argument("--repeats", type=int, default=None, help="A/B pairs per scenario (default 2)")
    p.add_argument("--procs", type=int, default=1, help="load generator processes (default 1)")
    p.add_argument("--mock-procs", type=int, default=1, help="mock upstream processes (SO_REUSEPORT)")
    p.add_argument("--rate", type=float, default=0.0,
                   help="throughput scenarios arrive open-loop at this many requests/s instead of closed-loop "
                        "at --concurrency (meters CPU per request below saturation)")
    p.add_argument("--rss-requests", type=int, default=None, help="requests before the RSS check (default 100000)")
    p.add_argument("--stall-concurrency", type=int, default=512)
    p.add_argument("--scenarios", default=None, help="comma list of scenario names to run (default all)")
    p.add_argument("--direct-only", action="store_true", help="don't start the gateway")
    p.add_argument("--gateway-cmd", default=None, help="command prefix instead of 'fastgw' (gets 'serve --config ...')")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory (default bench/results)")
    p.add_argument("--label", default="", help="label stored in the results (shown by compare)")
    p.add_argument("--controls", choices=CONTROLS,
                   default="default",
                   help="production controls: the gateway's defaults (request log, usage injection, "
                        "metrics), off (no request log, no usage injection), all (defaults plus a "
                        "virtual key on every request and cost accounting), limits / limits-redis (all "
                        "plus rpm/tpm/concurrency limits on the key, in-process / in a loopback "
                        "redis-server), or cache / cache-redis (all plus the response cache: hits after the "
                        "first, in memory / in a loopback redis-server)")
    return p


def config_from_args(a: argparse.Namespace):  # type: ignore[no-untyped-def]
    from bench.matrix import MatrixConfig

    q = a.quick
    return MatrixConfig(
        concurrency=a.concurrency or ([16] if q else [1, 64]),
        workers=a.workers or [1],
        duration=a.duration if a.duration is not None else (0.4 if q else 5.0),
        warmup=a.warmup if a.warmup is not None else (0.15 if q else 1.0),
        repeats=a.repeats if a.repeats is not None else (1 if q else 2),
        procs=a.procs, mock_procs=a.mock_procs,
        rss_requests=a.rss_requests if a.rss_requests is not None else (2000 if q else 100_000),
        stall_concurrency=a.stall_concurrency,
        scenarios=[s.strip() for s in a.scenarios.split(",")] if a.scenarios else None,
        gateway_cmd=shlex.split(a.gateway_cmd) if a.gateway_cmd else None,
        direct_only=a.direct_only, quick=q, label=a.label, controls=a.controls, rate=a.rate,
    )


def run_matrix(argv: list[str]) -> int:
    from bench.matrix import Matrix
    from bench.report import render_text, write_outputs

    a = matrix_parser().parse_args(argv)
    cfg = config_from_args(a)
    result = Matrix(cfg).run()
    paths = write_outputs(result, a.out)
    print(render_text(result))
    print()
    print(f"results: {paths['json']}  {paths['md']}")
    if paths["png"] is None:
        print("note: matplotlib is not installed; chart skipped (pip install 'fastgw[bench]')")
    else:
        print(f"chart: {paths['png']}")
    bad = [e for e in result["entries"] if e.get("status") == "errors"]
    if bad:
        print(f"warning: {len(bad)} run(s) had errors: " + ", ".join(f"{e['scenario']}/{e['side']}" for e in bad),
              file=sys.stderr)
    return 0


def run_ab_controls(argv: list[str]) -> int:
    """Two ``--controls`` modes of this build in one run, in pairs A B, B A, ... on one mock: a
    feature's cost is B against A measured side by side, not across runs on a noisy machine."""
    from bench.abrun import Build, run_ab
    from bench.gateway import default_gateway_cmd
    from bench.report import compare, write_outputs

    p = matrix_parser()
    p.prog = "python -m bench ab"
    p.add_argument("mode_a", choices=CONTROLS)
    p.add_argument("mode_b", choices=CONTROLS)
    a = p.parse_args(argv)
    cfg = config_from_args(a)
    cmd = cfg.gateway_cmd or default_gateway_cmd()
    ra, rb = run_ab(Build(f"controls={a.mode_a}", cmd, controls=a.mode_a),
                    Build(f"controls={a.mode_b}", cmd, controls=a.mode_b), cfg)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = a.out if a.out != RESULTS_DIR else RESULTS_DIR / "controls"
    pa = write_outputs(ra, out, f"ab-{stamp}-A")
    pb = write_outputs(rb, out, f"ab-{stamp}-B")
    print(compare(ra, rb))
    print(f"results: {pa['json']} {pb['json']}  (A = {a.mode_a}, B = {a.mode_b})")
    return 0 if ra["gateway"]["available"] and rb["gateway"]["available"] else 1


def run_compare(argv: list[str]) -> int:
    from bench.report import compare

    p = argparse.ArgumentParser(prog="python -m bench compare", description="per-scenario change A -> B")
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    a = p.parse_args(argv)
    print(compare(json.loads(a.a.read_text()), json.loads(a.b.read_text())))
    return 0


def _json_arg(p: argparse.ArgumentParser, kind: str) -> None:
    default = RESULTS_DIR / kind / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    p.add_argument("--json", type=Path, nargs="?", const=default, default=None, metavar="FILE",
                   help=f"also write the rows (with the commit) to FILE; without FILE: "
                        f"bench/results/{kind}/{kind}-YYYYmmdd-HHMMSS.json, listed by python -m bench index")


def run_ceiling(argv: list[str]) -> int:
    from bench.ceiling import measure, render

    p = argparse.ArgumentParser(prog="python -m bench ceiling", description="mock ceiling and loadgen cost")
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--combos", default="1x1,2x2", help="MOCKPROCSxLOADGENPROCS list (default 1x1,2x2)")
    _json_arg(p, "ceiling")
    a = p.parse_args(argv)
    combos = [(int(m), int(g)) for m, g in (c.split("x") for c in a.combos.split(","))]
    started = now()
    rows = measure(a.duration, a.concurrency, combos)
    if a.json:
        print(f"results: {write_rows(rows, a.json, started)}")
    print(render(rows))
    return 0


def run_floor(argv: list[str]) -> int:
    from bench.floor import measure, render

    p = argparse.ArgumentParser(prog="python -m bench floor",
                                description="CPU per request of granian ASGI hello, a bare h11 relay and fastgw")
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    _json_arg(p, "floor")
    a = p.parse_args(argv)
    started = now()
    rows = measure(a.duration, a.concurrency, a.rounds)
    if a.json:
        print(f"results: {write_rows(rows, a.json, started)}")
    print(render(rows))
    return 0


def run_instr(argv: list[str]) -> int:
    from bench.instr import SCENARIOS, InstrConfig, available, measure, render

    p = argparse.ArgumentParser(prog="python -m bench instr",
                                description="instructions per request (callgrind Ir) of one gateway worker under "
                                            "two --controls modes: a feature's cost counted, not timed")
    p.add_argument("mode_a", choices=CONTROLS)
    p.add_argument("mode_b", choices=CONTROLS)
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list of throughput scenarios")
    p.add_argument("--requests", type=int, default=1000, help="requests counted per scenario and mode")
    p.add_argument("--warmup", type=int, default=300, help="requests sent before counting")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--gateway-cmd", default=None, help="command that runs fastgw (default: this checkout's)")
    _json_arg(p, "instr")
    a = p.parse_args(argv)
    why = available()
    if why:
        print(f"bench instr: callgrind {why}", file=sys.stderr)
        return 2
    if not 0 < a.requests <= 100_000 or not 0 <= a.warmup <= 100_000:
        print("bench instr: --requests must be in (0, 100000] and --warmup in [0, 100000]", file=sys.stderr)
        return 2
    cfg = InstrConfig((a.mode_a, a.mode_b), tuple(x for x in a.scenarios.split(",") if x), a.requests, a.warmup,
                      a.concurrency, shlex.split(a.gateway_cmd) if a.gateway_cmd else None)
    started = now()
    result = measure(cfg, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    if a.json:
        print(f"results: {write_rows(result['entries'], a.json, started)}")
    print(render(result))
    errors = sum(e["errors"] for e in result["entries"])
    return 0 if errors == 0 else 1


def run_report(argv: list[str]) -> int:
    from bench.report import chart, render_text

    p = argparse.ArgumentParser(prog="python -m bench report", description="re-render a result JSON "
                                "(table on stdout, PNG chart next to it)")
    p.add_argument("result", type=Path)
    a = p.parse_args(argv)
    result = json.loads(a.result.read_text())
    print(render_text(result))
    png = a.result.with_suffix(".png")
    print(f"chart: {png}" if chart(result, png) else "note: matplotlib is not installed; chart skipped")
    return 0


def run_index(argv: list[str]) -> int:
    from bench.index import main as index_main

    return index_main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "index":
        return run_index(argv[1:])
    if argv and argv[0] == "ab":
        return run_ab_controls(argv[1:])
    if argv and argv[0] == "compare":
        return run_compare(argv[1:])
    if argv and argv[0] == "report":
        return run_report(argv[1:])
    if argv and argv[0] == "floor":
        return run_floor(argv[1:])
    if argv and argv[0] == "instr":
        return run_instr(argv[1:])
    if argv and argv[0] == "ceiling":
        return run_ceiling(argv[1:])
    return run_matrix(argv)


if __name__ == "__main__":
    sys.exit(main())
