"""Reports of a matrix run: stdout table, markdown, JSON, PNG chart, and A/B comparison."""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def git_rev() -> str:
    """The checkout's short HEAD commit, recorded in every result file ("" outside git)."""
    try:
        return subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def write_rows(rows: list[dict[str, Any]], path: Path, started: str) -> Path:
    """Write a row-list result (floor, ceiling), each row stamped with the commit and start time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"git_rev": git_rev(), "started": started}
    path.write_text(json.dumps([{**r, **meta} for r in rows], indent=1))
    return path


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.2f}"


def _signed_ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:+.2f}"


def pairs(result: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """(direct, gateway) entry pairs in run order."""
    ents = result["entries"]
    gw = {(e["scenario"], e["concurrency"], e["workers"]): e for e in ents if e["side"] == "gateway"}
    return [(e, gw.get((e["scenario"], e["concurrency"], e["workers"]))) for e in ents if e["side"] == "direct"]


def added(d: dict[str, Any], g: dict[str, Any] | None, metric: str, pct: str) -> float | None:
    if g is None or d.get("status") == "n/a" or g.get("status") == "n/a" or metric not in g or metric not in d:
        return None
    return float(g[metric][pct] - d[metric][pct])


COLS = ["scenario", "c", "w", "side", "req/s", "ttfb p50", "p90", "p99", "p99.9", "total p50", "p99",
        "+ttfb p50", "+total p50", "+total p99", "gw cpu us/req", "gw rss MB", "stall ms", "errors"]


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for d, g in pairs(result):
        for e in (d, g):
            if e is None:
                continue
            base = [e["scenario"], str(e["concurrency"]), str(e["workers"]), e["side"]]
            if e.get("status") == "n/a" or "ttfb_us" not in e:
                rows.append([*base, "n/a"] + [""] * (len(COLS) - 5))
                continue
            t, tot = e["ttfb_us"], e["total_us"]
            is_gw = e["side"] == "gateway"
            rows.append([
                *base, f"{e['rps']:.0f}", _ms(t["p50"]), _ms(t["p90"]), _ms(t["p99"]), _ms(t["p99.9"]),
                _ms(tot["p50"]), _ms(tot["p99"]),
                _signed_ms(added(d, g, "ttfb_us", "p50")) if is_gw else "",
                _signed_ms(added(d, g, "total_us", "p50")) if is_gw else "",
                _signed_ms(added(d, g, "total_us", "p99")) if is_gw else "",
                f"{e['gw_cpu_us_per_req']:.0f}" if is_gw else "",
                f"{e['gw_peak_rss_mb']:.0f}" if is_gw else "",
                _ms(e["stall_us"]) if "stall_us" in e else "",
                str(e.get("errors", 0)),
            ])
    return rows


def text_table(rows: list[list[str]], cols: list[str] = COLS) -> str:
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 4 else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*cols), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(lines)


def md_table(rows: list[list[str]], cols: list[str] = COLS) -> str:
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def seed_figures(result: dict[str, Any]) -> dict[str, Any]:
    """The seed benchmark's figures: req/s and p50 TTFB of streaming chat/completions and
    /v1/responses through the gateway (plus direct-to-mock), at the highest concurrency run."""
    out: dict[str, Any] = {}
    for name, label in (("chat_stream", "/v1/chat/completions (stream)"), ("responses_stream", "/v1/responses (stream)")):
        cands = [(d, g) for d, g in pairs(result) if d["scenario"] == name and "rps" in d]
        if not cands:
            continue
        d, g = max(cands, key=lambda p: (p[0]["concurrency"], -p[0]["workers"]))
        fig = {"endpoint": label, "concurrency": d["concurrency"], "workers": d["workers"],
               "direct_rps": d["rps"], "direct_p50_ttfb_ms": round(d["ttfb_us"]["p50"] / 1000, 3)}
        if g is not None and "rps" in g:
            fig.update(gateway_rps=g["rps"], gateway_p50_ttfb_ms=round(g["ttfb_us"]["p50"] / 1000, 3))
        out[name] = fig
    return out


def seed_lines(result: dict[str, Any]) -> list[str]:
    lines = ["Seed figures (streaming through an OpenAI-compatible mock; req/s and p50 TTFB):"]
    for f in seed_figures(result).values():
        gw = (f"fastgw {f['gateway_rps']:.0f} req/s, p50 TTFB {f['gateway_p50_ttfb_ms']:.2f} ms"
              if "gateway_rps" in f else "fastgw n/a")
        lines.append(f"  {f['endpoint']:<32} c={f['concurrency']} w={f['workers']}: {gw}   "
                     f"(direct to mock {f['direct_rps']:.0f} req/s, p50 TTFB {f['direct_p50_ttfb_ms']:.2f} ms)")
    return lines


def headline(result: dict[str, Any]) -> list[str]:
    g = result["gateway"]
    lines = []
    if g.get("available"):
        cs = g.get("cold_start_s") or []
        lines.append("Gateway cold start (launch -> first 200 /health): "
                     + ", ".join(f"{x * 1000:.0f} ms" for x in cs))
        lines.append(f"Translated providers: {g.get('support')}")
        r = g.get("rss_after_n")
        if r:
            lines.append(f"Gateway RSS after {r['requests']} requests (w={r['workers']}, {r['procs']} procs): "
                         f"{r['rss_before_mb']} -> {r['rss_after_mb']} MiB (VmHWM sum {r['hwm_mb']} MiB), "
                         f"errors {r['errors']}")
    else:
        lines.append(f"Gateway: not available ({(g.get('error') or 'direct-only run').splitlines()[0]})")
    direct = [e for e in result["entries"] if e["side"] == "direct" and "rps" in e]
    if direct:
        top = max(direct, key=lambda e: e["rps"])
        lines.append(f"Mock+loadgen ceiling in this run: {top['rps']:.0f} req/s ({top['scenario']} c={top['concurrency']}); "
                     f"loadgen CPU {top['loadgen_cpu_us_per_req']:.1f} us/req")
    for d, g2 in pairs(result):
        if g2 is not None and d["kind"] in ("paced", "stall") and "stall_us" in g2 and "stall_us" in d:
            lines.append(f"{d['scenario']} c={d['concurrency']}: added TTFB p50 "
                         f"{_signed_ms(added(d, g2, 'ttfb_us', 'p50'))} ms, p99 {_signed_ms(added(d, g2, 'ttfb_us', 'p99'))} ms; "
                         f"max inter-event gap over upstream's: direct {_ms(d['stall_us'])} ms, "
                         f"gateway {_ms(g2['stall_us'])} ms")
    return lines


def render_text(result: dict[str, Any]) -> str:
    return "\n".join([text_table(table_rows(result)), "", *headline(result), "", *seed_lines(result)])


def render_markdown(result: dict[str, Any]) -> str:
    m = result["meta"]
    out = [f"# fastgw benchmark {m['started']}", "",
           f"git {m.get('git_rev') or '?'}, Python {m['python']}, {m['cpus']} CPUs, elapsed {m['elapsed_s']} s. "
           f"Latencies in ms; `+` columns are gateway minus direct-to-mock; gw cpu = utime+stime of the "
           f"whole gateway process tree per request; gw rss = peak of the sampled VmRSS sum.", "",
           md_table(table_rows(result)), ""]
    out += [f"- {x}" for x in headline(result)]
    out += ["", "## Seed figures", ""] + [f"    {x}" for x in seed_lines(result)[1:]]
    out += ["", "## Scenarios", ""]
    seen = set()
    for e in result["entries"]:
        if e["scenario"] not in seen:
            seen.add(e["scenario"])
            out.append(f"- **{e['scenario']}**: {e['description']}")
    return "\n".join(out) + "\n"


def chart(result: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ps = [(d, g) for d, g in pairs(result) if "rps" in d]
    labels = [f"{d['scenario']}\nc={d['concurrency']} w={d['workers']}" for d, _ in ps]
    x = list(range(len(ps)))
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(max(8, len(ps) * 1.1), 9))
    a1.bar([i - 0.2 for i in x], [d["rps"] for d, _ in ps], 0.4, color="tab:blue", label="direct to mock")
    a1.bar([i + 0.2 for i in x], [g["rps"] if g and "rps" in g else 0 for _, g in ps], 0.4, color="tab:orange",
           label="through fastgw")
    a1.set_ylabel("req/s")
    a1.set_yscale("log")
    a1.legend()
    a1.set_xticks(x, labels, fontsize=7)
    for side, off, key, color in (("direct", -0.2, 0, "tab:blue"), ("fastgw", 0.2, 1, "tab:orange")):
        p50 = [((p[key] or {}).get("ttfb_us", {}).get("p50", 0)) / 1000 for p in ps]
        p99 = [((p[key] or {}).get("ttfb_us", {}).get("p99", 0)) / 1000 for p in ps]
        a2.bar([i + off for i in x], p99, 0.4, color=color, alpha=0.35, label=f"{side} TTFB p99")
        a2.bar([i + off for i in x], p50, 0.4, color=color, label=f"{side} TTFB p50")
    a2.set_ylabel("TTFB ms")
    a2.set_yscale("log")
    a2.legend(fontsize=7)
    a2.set_xticks(x, labels, fontsize=7)
    fig.suptitle(f"fastgw bench {result['meta']['started']} ({result['meta'].get('git_rev', '')})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def write_outputs(result: dict[str, Any], out_dir: Path = RESULTS_DIR, stem: str | None = None) -> dict[str, Path | None]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = stem or "bench-" + time.strftime("%Y%m%d-%H%M%S")
    jp, mp, pp = out_dir / f"{stem}.json", out_dir / f"{stem}.md", out_dir / f"{stem}.png"
    result.setdefault("seed", seed_figures(result))
    jp.write_text(json.dumps(result, indent=1, default=str))
    mp.write_text(render_markdown(result))
    return {"json": jp, "md": mp, "png": pp if chart(result, pp) else None}


CMP_COLS = ["scenario", "c", "w", "side", "req/s A", "req/s B", "change", "ttfb p50 A", "B", "total p99 A", "B",
            "cpu us/req A", "B", "cpu change", "pairs: median (IQR)"]


def _pct(a: float, b: float) -> str:
    return f"{(b - a) / a * 100:+.1f}%" if a else "-"


def paired_change(a: list[float], b: list[float]) -> tuple[float, float, float] | None:
    """The median and interquartile range of B's change against A over runs taken in turn
    (A1 B1 A2 B2 ...), as fractions: each pair ran close in time, so drift between pairs of a
    noisy machine cancels. None without at least three pairs."""
    ratios = sorted(y / x - 1 for x, y in zip(a, b, strict=False) if x > 0)
    if len(ratios) < 3:
        return None
    q = statistics.quantiles(ratios, n=4, method="inclusive")
    return statistics.median(ratios), q[0], q[2]


def _paired(ea: dict[str, Any], eb: dict[str, Any]) -> str:
    got = paired_change(ea.get("gw_cpu_runs") or [], eb.get("gw_cpu_runs") or [])
    if got is None:
        return ""
    med, lo, hi = got
    return f"{med * 100:+.1f}% ({lo * 100:+.1f}..{hi * 100:+.1f})"


def compare(a: dict[str, Any], b: dict[str, Any]) -> str:
    """Per-scenario change from run A to run B (matched on scenario, concurrency, workers, side);
    with a Redis-backed mode, also what the loopback redis-server spent per request."""
    key = lambda e: (e["scenario"], e["concurrency"], e["workers"], e["side"])  # noqa: E731
    bmap = {key(e): e for e in b["entries"]}
    pairs = [(ea, bmap[key(ea)]) for ea in a["entries"]
             if key(ea) in bmap and "rps" in ea and "rps" in bmap[key(ea)]]
    with_redis = any("redis_cpu_us_per_req" in e for pair in pairs for e in pair)
    rows = []
    for ea, eb in pairs:
        row = [ea["scenario"], str(ea["concurrency"]), str(ea["workers"]), ea["side"],
               f"{ea['rps']:.0f}", f"{eb['rps']:.0f}", _pct(ea["rps"], eb["rps"]),
               _ms(ea["ttfb_us"]["p50"]), _ms(eb["ttfb_us"]["p50"]),
               _ms(ea["total_us"]["p99"]), _ms(eb["total_us"]["p99"]),
               f"{ea.get('gw_cpu_us_per_req', 0):.0f}" if ea["side"] == "gateway" else "",
               f"{eb.get('gw_cpu_us_per_req', 0):.0f}" if eb["side"] == "gateway" else "",
               _pct(ea["gw_cpu_us_per_req"], eb["gw_cpu_us_per_req"])
               if ea.get("gw_cpu_us_per_req") and eb.get("gw_cpu_us_per_req") else "",
               _paired(ea, eb)]
        if with_redis:
            row += [_us(ea.get("redis_cpu_us_per_req")), _us(eb.get("redis_cpu_us_per_req"))]
        rows.append(row)
    cols = [*CMP_COLS, "redis us/req A", "B"] if with_redis else CMP_COLS
    la = a["meta"].get("label") or a["meta"].get("git_rev") or "A"
    lb = b["meta"].get("label") or b["meta"].get("git_rev") or "B"
    return f"A = {la} ({a['meta']['started']})\nB = {lb} ({b['meta']['started']})\n\n" + text_table(rows, cols)


def _us(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"
