"""``python -m bench index``: the index of the result files, and the README figures drawn from them.

Reads every ``*.json`` under ``bench/results/`` (matrix runs at the top, in ``archive/``,
``controls/`` and ``floor/``; ``floor-*``, ``ceiling-*`` and ``instr-*`` row lists; ``soak-*`` runs) and
writes ``bench/results/INDEX.md``: one row per run with its date, commit, label and headline
figures, the reference run marked. It also rewrites the blocks of ``bench/README.md`` between
``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->``, so that every figure the README
quotes comes from a result file.

The reference run is named in ``bench/results/REFERENCE`` (a path relative to the results
directory). ``--reference FILE`` promotes a matrix run: the previous reference's files move to
``archive/``, FILE's (json, md, png) move to the top of the results directory.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Any

from bench.report import REPO_ROOT, RESULTS_DIR, added, pairs

README = Path(__file__).resolve().parent / "README.md"
REFERENCE_FILE = "REFERENCE"
ARCHIVE = "archive"
_STAMP = re.compile(r"(\d{8})-(\d{6})")


@dataclass
class Run:
    path: Path  # relative to the results directory
    kind: str  # matrix | floor | ceiling | instr | soak
    data: Any
    commit: str
    date: str


def _date_from_name(name: str) -> str:
    m = _STAMP.search(name)
    if not m:
        return "?"
    d, t = m.groups()
    return f"{d[:4]}-{d[4:6]}-{d[6:]}T{t[:2]}:{t[2:4]}:{t[4:]}"


def _git(*args: str) -> list[str]:
    try:
        return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True,
                              timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return []


def _commit_that_added(path: Path) -> str:
    """The commit that added ``path`` (through moves: ``-M`` shows a move as a rename, not an add,
    and then ``--follow`` finds the original), or ``?`` outside git or while uncommitted."""
    out = _git("log", "-M", "--diff-filter=A", "--format=%h", "--", str(path))
    if not out:
        out = _git("log", "--follow", "--diff-filter=A", "--format=%h", "--", str(path))
    return out[-1] if out else "?"


def _kind(data: Any) -> str | None:
    if isinstance(data, dict) and "entries" in data and "meta" in data:
        return "matrix"
    if isinstance(data, dict) and "judgement" in data:
        return "soak"
    if isinstance(data, list) and data and isinstance(data[0], dict):
        if "server" in data[0]:
            return "floor"
        if "mock_procs" in data[0]:
            return "ceiling"
        if "ir_per_req" in data[0]:
            return "instr"
    return None


def load_runs(results: Path = RESULTS_DIR) -> list[Run]:
    runs = []
    for p in sorted(results.rglob("*.json")):
        data = json.loads(p.read_text())
        kind = _kind(data)
        if kind is None:
            continue
        if kind == "matrix":
            commit, date = data["meta"].get("git_rev") or "", data["meta"].get("started") or ""
        elif kind in ("floor", "ceiling", "instr"):
            commit, date = data[0].get("git_rev") or "", data[0].get("started") or ""
        else:
            commit, date = "", ""
        runs.append(Run(p.relative_to(results), kind, data, commit or _commit_that_added(p),
                        date or _date_from_name(p.name)))
    return sorted(runs, key=lambda r: (r.date, str(r.path)))


def reference_path(results: Path = RESULTS_DIR) -> Path | None:
    """The reference run, relative to ``results``, as ``REFERENCE`` names it."""
    f = results / REFERENCE_FILE
    if not f.exists():
        return None
    name = f.read_text().strip()
    return Path(name) if name else None


# ---------------------------------------------------------------- figures of one run
def _entry(result: dict[str, Any], scenario: str, side: str, concurrency: int | None = None) -> dict[str, Any] | None:
    cands = [e for e in result["entries"] if e["scenario"] == scenario and e["side"] == side and "rps" in e
             and (concurrency is None or e["concurrency"] == concurrency)]
    return max(cands, key=lambda e: (e["concurrency"], -e["workers"])) if cands else None


def _f(v: float | None, fmt: str = "{:.0f}") -> str:
    return "-" if v is None else fmt.format(v)


def matrix_figures(result: dict[str, Any]) -> dict[str, str]:
    """Headline figures of a matrix run, formatted (``-`` where the run has none)."""
    out: dict[str, str] = {}
    for name, short in (("chat_nonstream", "json"), ("chat_stream", "sse")):
        g = _entry(result, name, "gateway", 64)
        out[f"{short} req/s"] = _f(g["rps"] if g else None)
        out[f"{short} cpu"] = _f(g.get("gw_cpu_us_per_req") if g else None)
    paced = next(((d, g) for d, g in pairs(result) if d["scenario"] == "paced_stream"), None)
    p50 = added(paced[0], paced[1], "ttfb_us", "p50") if paced else None
    p99 = added(paced[0], paced[1], "ttfb_us", "p99") if paced else None
    out["paced"] = "-" if p50 is None or p99 is None else f"{p50 / 1000:+.2f} / {p99 / 1000:+.2f}"
    stall = _entry(result, "stall_512", "gateway")
    out["stall"] = _f(stall["stall_us"] / 1000 if stall and "stall_us" in stall else None, "{:.2f}")
    r = (result.get("gateway") or {}).get("rss_after_n")
    out["rss"] = f"{r['rss_before_mb']} -> {r['rss_after_mb']} ({r['requests']})" if r else "-"
    return out


MATRIX_COLS = ["date", "commit", "label", "file", "chat JSON c=64 req/s", "cpu us/req", "chat SSE c=64 req/s",
               "cpu us/req", "paced +TTFB p50 / p99 ms", "512-stream gap ms", "RSS MiB after N (N)"]


def _label(run: Run) -> str:
    m = run.data["meta"]
    label = m.get("label") or ""
    if m.get("controls") not in (None, "default"):
        label = f"{label} (controls {m['controls']})".strip()
    return label or "-"


def _matrix_row(run: Run, ref: Path | None) -> list[str]:
    f = matrix_figures(run.data)
    name = f"[{run.path}]({run.path})" + (" **reference**" if run.path == ref else "")
    return [run.date, run.commit, _label(run), name, f["json req/s"], f["json cpu"], f["sse req/s"], f["sse cpu"],
            f["paced"], f["stall"], f["rss"]]


def _md(cols: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def _floor_means(rows: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    keys = {(r["shape"], r["server"]) for r in rows}
    return {k: mean(r["cpu_us_per_req"] for r in rows if (r["shape"], r["server"]) == k) for k in keys}


def _floor_row(run: Run) -> list[str]:
    m = _floor_means(run.data)
    cells = [run.date, run.commit, f"[{run.path}]({run.path})"]
    for shape in ("chat_nonstream", "chat_stream"):
        vals = [m.get((shape, s)) for s in ("hello", "relay", "fastgw")]
        cells += [_f(v, "{:.1f}") for v in vals]
        cells.append("-" if vals[1] is None or vals[2] is None else f"{vals[2] - vals[1]:+.1f}")
    return cells


FLOOR_COLS = ["date", "commit", "file", "JSON hello", "relay", "fastgw", "fastgw - relay", "SSE hello", "relay",
              "fastgw", "fastgw - relay"]


def _ceiling_rows(run: Run) -> list[list[str]]:
    return [[run.date, run.commit, f"[{run.path}]({run.path})", r["shape"], f"{r['mock_procs']}x{r['loadgen_procs']}",
             str(r["rps"]), f"{r['mock_cpu_us_per_req']:.1f}", f"{r['loadgen_cpu_us_per_req']:.1f}"] for r in run.data]


CEILING_COLS = ["date", "commit", "file", "shape", "mock x loadgen procs", "req/s", "mock cpu us/req",
                "loadgen cpu us/req"]


def _instr_rows(run: Run) -> list[list[str]]:
    """Per scenario, each mode's instructions per request, in run order, and the last against the first."""
    from bench.instr import by_scenario

    return [[run.date, run.commit, f"[{run.path}]({run.path})", sc,
             " / ".join(f"{r['mode']} {r['ir_per_req']:,.0f}" for r in rows), "-" if change is None else f"{change:+.1%}",
             str(sum(r["errors"] for r in rows))] for sc, rows, change in by_scenario(run.data)]


INSTR_COLS = ["date", "commit", "file", "scenario", "instructions per request", "change", "errors"]


def _soak_row(run: Run) -> list[str]:
    d, j, a = run.data, run.data["judgement"], run.data.get("args", {})
    load = d.get("load", {})
    return [run.date, run.commit, f"[{run.path}]({run.path})", f"{a.get('rate', '?')}/s x {a.get('minutes', '?')} min",
            j.get("verdict", "?"), _f(j.get("rss_growth_mb"), "{:+.2f}"), _f(j.get("fd_growth"), "{:+d}"),
            str(load.get("errors", "?")), _f(load["ttfb_us"]["p99"] / 1000 if "ttfb_us" in load else None, "{:.1f}")]


SOAK_COLS = ["date", "commit", "file", "load", "verdict", "RSS growth MiB", "fd floor growth", "errors",
             "TTFB p99 ms"]


def render_index(results: Path = RESULTS_DIR) -> str:
    runs = load_runs(results)
    ref = reference_path(results)
    matrix = [r for r in runs if r.kind == "matrix"]
    main = [r for r in matrix if len(r.path.parts) == 1 or r.path.parts[0] == ARCHIVE]
    out = ["# Benchmark results", "",
           "Generated by `python -m bench index` from the JSON files in this directory; do not edit by hand.", ""]
    if ref is not None:
        out += [f"**Reference run: [{ref}]({ref})** (named in `{REFERENCE_FILE}`). Earlier matrix runs are in "
                f"`{ARCHIVE}/`.", ""]
    else:
        out += [f"No reference run (`{REFERENCE_FILE}` is missing).", ""]
    out += ["A new reference: run the full matrix (`python -m bench`, which writes "
            "`bench/results/bench-YYYYmmdd-HHMMSS.{json,md,png}`), then "
            "`python -m bench index --reference bench/results/bench-YYYYmmdd-HHMMSS.json`: the previous "
            f"reference moves to `{ARCHIVE}/`, this index and the figures in `bench/README.md` are regenerated. "
            "Commit the results directory and the README together.", "",
            "Figures: gateway side at c=64 and one worker; `cpu us/req` is the gateway process tree's CPU per "
            "request; paced = added TTFB of the paced scenario (gateway minus direct); 512-stream gap = the "
            "largest inter-event gap over the upstream's interval at c=512, through the gateway; RSS = gateway "
            "RSS before -> after N streaming requests. The commit is the one the run measured when the file "
            "records it, otherwise the commit that added the file.", "",
            "## Matrix runs (`python -m bench`)", ""]
    out += _md(MATRIX_COLS, [_matrix_row(r, ref) for r in main])
    for sub, title in (("controls", "Production controls (`--controls off|all`)"),
                       ("floor", "The bare relay in the gateway's place (`--gateway-cmd ... bench.floor_apps relay`)")):
        rows = [_matrix_row(r, ref) for r in matrix if r.path.parts[0] == sub]
        if rows:
            out += ["", f"## {title}", "", *_md(MATRIX_COLS, rows)]
    floors = [r for r in runs if r.kind == "floor"]
    if floors:
        out += ["", "## Floor (`python -m bench floor`): mean CPU us/req at c=64, one worker", "",
                *_md(FLOOR_COLS, [_floor_row(r) for r in floors])]
    ceilings = [r for r in runs if r.kind == "ceiling"]
    if ceilings:
        out += ["", "## Mock ceiling and loadgen cost (`python -m bench ceiling --json`)", "",
                *_md(CEILING_COLS, [row for r in ceilings for row in _ceiling_rows(r)])]
    instrs = [r for r in runs if r.kind == "instr"]
    if instrs:
        out += ["", "## Instructions per request (`python -m bench instr A B --json`): callgrind Ir of one worker", "",
                *_md(INSTR_COLS, [row for r in instrs for row in _instr_rows(r)])]
    soaks = [r for r in runs if r.kind == "soak"]
    if soaks:
        out += ["", "## Soak (`scripts/soak`)", "", *_md(SOAK_COLS, [_soak_row(r) for r in soaks])]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- README blocks
def _reference_run(results: Path) -> Run:
    ref = reference_path(results)
    run = next((r for r in load_runs(results) if r.path == ref and r.kind == "matrix"), None)
    if run is None:
        raise SystemExit(f"no reference matrix run: {results / REFERENCE_FILE} names {ref}")
    return run


def block_reference(results: Path) -> list[str]:
    run = _reference_run(results)
    return [f"Reference run: `bench/results/{run.path}` (commit {run.commit}, {run.date}); every run with its "
            "figures: [`bench/results/INDEX.md`](results/INDEX.md).", "",
            *_md(MATRIX_COLS[4:], [_matrix_row(run, None)[4:]])]


def block_headroom(results: Path) -> list[str]:
    """The loadgen-headroom figures of the reference run: gateway vs loadgen CPU, direct vs gateway req/s."""
    run = _reference_run(results)
    gw = [g for d, g in pairs(run.data) if g is not None and d.get("kind") == "throughput"
          and "rps" in d and g.get("rps") and "gw_cpu_us_per_req" in g]
    if not gw:
        return [f"(the reference run `{run.path}` has no throughput scenario through the gateway)"]
    cpu = [g["gw_cpu_us_per_req"] for g in gw]
    gen = [g["loadgen_cpu_us_per_req"] / g["gw_cpu_us_per_req"] * 100 for g in gw]
    ratios = [d["rps"] / g["rps"] for d, g in pairs(run.data) if g in gw]
    return [f"In the reference run (`{run.path}`, its throughput scenarios at every concurrency) the gateway "
            f"spends {min(cpu):.0f}-{max(cpu):.0f} us of CPU per request; the load generator spends "
            f"{min(gen):.0f}-{max(gen):.0f} % of that on the same runs; direct-to-mock req/s is "
            f"{min(ratios):.1f}-{max(ratios):.1f}x the through-gateway figure of the same scenario."]


BLOCKS: dict[str, Callable[[Path], list[str]]] = {"reference": block_reference, "headroom": block_headroom}
_BLOCK = re.compile(r"(<!-- generated:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /generated:(?P=name) -->)", re.S)


def update_readme(text: str, results: Path = RESULTS_DIR) -> str:
    """``text`` with every generated block re-rendered from the result files."""
    def fill(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in BLOCKS:
            raise SystemExit(f"unknown generated block {name!r} in the README")
        return m.group(1) + "\n".join(BLOCKS[name](results)) + "\n" + m.group(4)

    return _BLOCK.sub(fill, text)


# ---------------------------------------------------------------- promotion
def _siblings(json_path: Path) -> list[Path]:
    return [p for p in (json_path.with_suffix(s) for s in (".json", ".md", ".png")) if p.exists()]


def promote(new: Path, results: Path = RESULTS_DIR) -> Path:
    """Make the matrix run ``new`` the reference; the previous one moves to ``archive/``.
    Returns the new reference's path relative to ``results``."""
    new = new.resolve()
    data = json.loads(new.read_text())
    if _kind(data) != "matrix":
        raise SystemExit(f"{new}: not a matrix result (python -m bench)")
    old = reference_path(results)
    if old is not None and (results / old).resolve() != new and (results / old).exists():
        (results / ARCHIVE).mkdir(parents=True, exist_ok=True)
        for p in _siblings(results / old):
            shutil.move(p, results / ARCHIVE / p.name)
    if new.parent != results.resolve():
        for p in _siblings(new):
            shutil.move(p, results / p.name)
    (results / REFERENCE_FILE).write_text(new.name + "\n")
    return Path(new.name)


def write_all(results: Path = RESULTS_DIR, readme: Path = README) -> list[Path]:
    (results / "INDEX.md").write_text(render_index(results))
    written = [results / "INDEX.md"]
    if readme.exists():
        text = readme.read_text()
        new = update_readme(text, results)
        if new != text:
            readme.write_text(new)
            written.append(readme)
    return written


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench index", description="write bench/results/INDEX.md and the "
                                "generated figures of bench/README.md from the result files")
    p.add_argument("--reference", type=Path, help="promote this matrix result JSON to the reference run "
                   "(the previous one moves to archive/)")
    p.add_argument("--results", type=Path, default=RESULTS_DIR, help=argparse.SUPPRESS)
    p.add_argument("--readme", type=Path, default=README, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.reference is not None:
        print(f"reference: {promote(a.reference, a.results)}")
    for path in write_all(a.results, a.readme):
        print(f"wrote {path}")
    return 0
