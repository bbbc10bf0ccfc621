"""Tiny matrix runs: direct only, and through a real ``fastgw serve``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import payloads as P
from bench.__main__ import main as bench_main
from bench.matrix import Matrix, MatrixConfig
from bench.report import compare, paired_change, render_markdown, render_text, seed_figures, write_outputs

TINY = dict(duration=0.3, warmup=0.1, repeats=1, rss_requests=200, stall_concurrency=32, quick=True)


def test_direct_only_matrix_and_reports(tmp_path: Path) -> None:
    cfg = MatrixConfig(concurrency=[4], scenarios=["chat_nonstream", "responses_stream"], direct_only=True, **TINY)
    res = Matrix(cfg).run()
    assert {(e["scenario"], e["side"]) for e in res["entries"]} == {("chat_nonstream", "direct"),
                                                                   ("responses_stream", "direct")}
    assert all(e["rps"] > 0 and e["errors"] == 0 for e in res["entries"])
    paths = write_outputs(res, tmp_path, stem="t")
    assert json.loads(paths["json"].read_text())["entries"] and paths["md"].read_text().startswith("# fastgw")
    text = render_text(res)
    assert "responses_stream" in text and "Seed figures" in text
    assert "/v1/responses (stream)" in seed_figures(res)["responses_stream"]["endpoint"]
    assert "req/s A" in compare(res, res) and "+0.0%" in compare(res, res)


def test_rate_runs_throughput_scenarios_open_loop() -> None:
    cfg = MatrixConfig(concurrency=[4], scenarios=["chat_nonstream"], direct_only=True, rate=200.0,
                       **{**TINY, "duration": 1.0})
    (e,) = Matrix(cfg).run()["entries"]
    # Closed-loop at c=4 against the mock runs thousands of requests a second; open-loop keeps the rate.
    assert e["rate"] == 200.0 and e["errors"] == 0 and 150 <= e["rps"] <= 250, e


def test_cli_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    e = {"scenario": "chat_stream", "concurrency": 1, "workers": 1, "side": "gateway", "rps": 100.0,
         "ttfb_us": {"p50": 1000}, "total_us": {"p99": 3000}, "gw_cpu_us_per_req": 50.0}
    a = {"meta": {"started": "x", "label": "A"}, "entries": [e]}
    b = {"meta": {"started": "y", "label": "B"}, "entries": [{**e, "rps": 150.0}]}
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert bench_main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    assert "+50.0%" in capsys.readouterr().out


def test_compare_gives_the_median_of_paired_runs() -> None:
    # One outlier pair moves the pooled figure a lot and the paired median little.
    e = {"scenario": "chat_nonstream", "concurrency": 64, "workers": 1, "side": "gateway", "rps": 100.0,
         "ttfb_us": {"p50": 1000}, "total_us": {"p99": 3000}}
    a = {"meta": {"started": "x"}, "entries": [{**e, "gw_cpu_us_per_req": 100.0, "gw_cpu_runs": [100, 100, 100, 100]}]}
    b = {"meta": {"started": "y"}, "entries": [{**e, "gw_cpu_us_per_req": 115.0, "gw_cpu_runs": [102, 102, 104, 152]}]}
    assert paired_change([100, 100, 100, 100], [102, 102, 104, 152]) == pytest.approx((0.03, 0.02, 0.16))
    assert paired_change([100, 100], [102, 102]) is None  # too few pairs to say
    out = compare(a, b)
    assert "+15.0%" in out and "+3.0% (+2.0..+16.0)" in out


def test_matrix_through_gateway(tmp_path: Path) -> None:
    cfg = MatrixConfig(concurrency=[4], scenarios=["chat_stream", "responses_stream", "anthropic_stream",
                                                   "paced_stream"], **TINY)
    res = Matrix(cfg).run()
    gw = res["gateway"]
    assert gw["available"] and gw["cold_start_s"] and gw["rss_after_n"]["requests"] == 200
    by = {(e["scenario"], e["side"]): e for e in res["entries"]}
    for name in ("chat_stream", "responses_stream", "paced_stream"):
        g = by[(name, "gateway")]
        assert g["rps"] > 0 and g["errors"] == 0 and g["gw_cpu_us_per_req"] > 0 and g["gw_peak_rss_mb"] > 0
    assert by[("anthropic_stream", "gateway")]["status"] == "ok"
    assert by[("paced_stream", "gateway")]["ttfb_us"]["p50"] >= 100_000
    md = render_markdown(res)
    assert "cold start" in md and "Seed figures" in md
    seed = seed_figures(res)
    assert seed["chat_stream"]["gateway_rps"] > 0 and seed["responses_stream"]["gateway_p50_ttfb_ms"] > 0


def test_matrix_with_all_controls_uses_a_virtual_key(tmp_path: Path) -> None:
    cfg = MatrixConfig(concurrency=[4], scenarios=["chat_nonstream", "chat_stream"], controls="all", **TINY)
    try:
        res = Matrix(cfg).run()
    finally:
        P.BENCH_KEY = "sk-bench"
    assert res["meta"]["controls"] == "all"
    by = {(e["scenario"], e["side"]): e for e in res["entries"]}
    for name in ("chat_nonstream", "chat_stream"):
        g = by[(name, "gateway")]
        # A wrong key would be refused (401): every request went through with the virtual key.
        assert g["rps"] > 0 and g["errors"] == 0, g


def test_gateway_cmd_found_from_an_interpreter_without_fastgw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """scripts/soak run with the system python still finds a fastgw to launch."""
    import sys

    from bench import gateway

    root = Path(gateway.__file__).resolve().parent.parent
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python3"))  # no fastgw beside it
    cmd = gateway.default_gateway_cmd()
    if (root / ".venv" / "bin" / "fastgw").exists():
        assert cmd == [str(root / ".venv" / "bin" / "fastgw")]
    else:
        assert cmd[0] == str(tmp_path / "python3") and repr(str(root)) in cmd[2]
    monkeypatch.setattr(gateway.Path, "exists", lambda self: False)
    cmd = gateway.default_gateway_cmd()
    assert cmd[:2] == [str(tmp_path / "python3"), "-c"] and repr(str(root)) in cmd[2]


@pytest.mark.parametrize("controls", ["limits", "limits-redis", "cache", "cache-redis"])
def test_matrix_with_limits_or_cache_controls(tmp_path: Path, controls: str) -> None:
    import shutil

    if controls.endswith("-redis") and not (shutil.which("redis-server") or Path("/usr/bin/redis-server").exists()):
        pytest.skip("redis-server is not installed")
    cfg = MatrixConfig(concurrency=[4], scenarios=["chat_nonstream", "chat_stream"], controls=controls, **TINY)
    try:
        res = Matrix(cfg).run()
    finally:
        P.BENCH_KEY = "sk-bench"
    assert res["meta"]["controls"] == controls
    by = {(e["scenario"], e["side"]): e for e in res["entries"]}
    for name in ("chat_nonstream", "chat_stream"):
        g = by[(name, "gateway")]
        # A refused (429) or unknown key would count as errors: the limits were never reached.
        assert g["rps"] > 0 and g["errors"] == 0, g
        # Redis-backed modes report the redis-server's CPU per request beside the gateway's.
        assert ("redis_cpu_us_per_req" in g) == controls.endswith("-redis"), g
    assert ("redis us/req A" in compare(res, res)) == controls.endswith("-redis")


def test_ab_runs_pairs_in_counterbalanced_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """``bench ab`` / compare-revs: two real gateways, pairs A B then B A, a run per side per pair."""
    from bench.abrun import Build, run_ab
    from bench.gateway import default_gateway_cmd

    order: list[str] = []
    real_run = Matrix._run

    def recording_run(self: Matrix, *args: object, **kw: object) -> dict[str, object]:
        order.append(self.cfg.label)
        return real_run(self, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Matrix, "_run", recording_run)
    cmd = default_gateway_cmd()
    cfg = MatrixConfig(concurrency=[2], scenarios=["chat_nonstream"], **{**TINY, "repeats": 4, "rss_requests": 0})
    ra, rb = run_ab(Build("A", cmd), Build("B", cmd), cfg)
    assert order == ["A", "B", "B", "A", "A", "B", "B", "A"]
    for res in (ra, rb):
        (e,) = [e for e in res["entries"] if e["side"] == "gateway"]
        assert len(e["gw_cpu_runs"]) == 4 and e["errors"] == 0, e


def test_compare_revs_runs_both_revisions_under_one_controls_mode() -> None:
    from scripts_support import load_script

    mod = load_script("compare-revs")
    assert mod.matrix_config(mod.parse_args(["main", "HEAD"])).controls == "default"
    cfg = mod.matrix_config(mod.parse_args(["main", "HEAD", "--controls", "limits", "--concurrency", "64"]))
    assert cfg.controls == "limits" and cfg.concurrency == [64]
    with pytest.raises(SystemExit):
        mod.parse_args(["main", "HEAD", "--controls", "nonsense"])
