"""Runs the scenario matrix: direct-to-mock versus through fastgw, alternating A B A B."""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from bench import payloads as P
from bench.gateway import (
    ANTHROPIC_MODEL,
    GEMINI_MODEL,
    KEYED_CONTROLS,
    LIMIT_ARGS,
    REDIS_CONTROLS,
    GatewayError,
    GatewayProc,
    MockProc,
    RedisProc,
    create_virtual_key,
    gateway_config,
    http_call,
)
from bench.loadgen import LoadResult, LoadSpec, run_load
from bench.procstat import CLK_TCK, TreeMeter, cpu_ticks, sample_tree
from bench.report import git_rev
from bench.scenarios import PROFILES, Scenario, build_matrix


@dataclass
class MatrixConfig:
    concurrency: list[int] = field(default_factory=lambda: [1, 64])
    workers: list[int] = field(default_factory=lambda: [1])
    duration: float = 5.0
    warmup: float = 1.0
    repeats: int = 2
    procs: int = 1  # load generator processes
    mock_procs: int = 1
    rss_requests: int = 100_000
    stall_concurrency: int = 512
    scenarios: list[str] | None = None
    gateway_cmd: list[str] | None = None
    gateway_env: dict[str, str] | None = None
    gateway_cwd: str | None = None
    direct_only: bool = False
    quick: bool = False
    label: str = ""
    controls: str = "default"  # default | off | all (see bench.gateway.CONTROLS_CONFIG)
    rate: float = 0.0  # > 0: throughput scenarios arrive open-loop at this many requests/s


class Progress:
    """Progress on stderr: an in-place line on a TTY, plain lines otherwise."""

    def __init__(self, total: int, stream: Any = None) -> None:
        self.total = total
        self.n = 0
        self.out = stream or sys.stderr
        self.tty = self.out.isatty()
        self.t0 = time.monotonic()
        self.current = ""

    def begin(self, what: str) -> None:
        self.n += 1
        self.current = f"[{self.n}/{self.total}] {what}"
        if self.tty:
            self.out.write("\r\033[K" + self.current)
            self.out.flush()

    def tick(self, issued: int, elapsed: float) -> None:
        if self.tty:
            self.out.write(f"\r\033[K{self.current}  {elapsed:5.1f}s  {issued} req")
            self.out.flush()

    def end(self, note: str) -> None:
        line = f"{self.current}  {note}  (t+{time.monotonic() - self.t0:.0f}s)"
        self.out.write(("\r\033[K" if self.tty else "") + line + "\n")
        self.out.flush()

    def note(self, msg: str) -> None:
        self.out.write(("\r\033[K" if self.tty else "") + msg + "\n")
        self.out.flush()


def probe_support(port: int) -> dict[str, bool]:
    """Which translated provider types the running gateway serves (by trying a stream)."""
    out = {}
    for kind, model in (("anthropic", ANTHROPIC_MODEL), ("gemini", GEMINI_MODEL)):
        ok = False
        for m in (model, ("anth/" if kind == "anthropic" else "gem/") + model):
            st, body = http_call(port, "POST", "/v1/chat/completions", P.chat_body(m, True),
                                 {"Authorization": "Bearer sk-bench"}, timeout=5)
            if st == 200 and b"data:" in body:
                ok = True
                break
        out[kind] = ok
    # The Anthropic front door (/v1/messages), to the Anthropic provider.
    st, body = http_call(port, "POST", "/v1/messages", P.anthropic_body(ANTHROPIC_MODEL, True),
                         {"x-api-key": "sk-bench", "anthropic-version": "2023-06-01"}, timeout=5)
    out["messages"] = out["anthropic"] and st == 200 and b"message_start" in body
    return out


class Matrix:
    def __init__(self, cfg: MatrixConfig) -> None:
        self.cfg = cfg
        paced_scale = 2.0 if not cfg.quick else 3.0
        self.scenarios = build_matrix(cfg.concurrency, cfg.scenarios, cfg.stall_concurrency, paced_scale=paced_scale)
        sides = 1 if cfg.direct_only else 2
        self.progress = Progress(len(cfg.workers) * len(self.scenarios) * cfg.repeats * sides)
        self.entries: list[dict[str, Any]] = []
        self._w = cfg.workers[0] if cfg.workers else 1
        self._redis: RedisProc | None = None
        self.bench_key = P.BENCH_KEY  # the key this side's requests carry (a virtual key in keyed modes)
        self.gateway_info: dict[str, Any] = {"available": False, "error": None, "cold_start_s": [], "support": {},
                                             "rss_after_n": None, "workers": cfg.workers}

    def _rate(self, sc: Scenario) -> float:
        """The open-loop arrival rate ``sc`` runs at (0: closed loop). A fixed rate below
        saturation meters CPU per request without the gateway fighting the load generator and
        the mock for the cores; only throughput scenarios take it (paced and stall ones keep
        their own shape)."""
        return self.cfg.rate if self.cfg.rate > 0 and sc.kind == "throughput" else 0.0

    def _spec(self, sc: Scenario, port: int, reqs: list[Any]) -> LoadSpec:
        c = self.cfg
        rate = self._rate(sc)
        return LoadSpec("127.0.0.1", port, reqs, mode="open" if rate else "closed", rate=rate,
                        concurrency=sc.concurrency, duration=c.duration * sc.duration_scale, warmup=c.warmup,
                        procs=min(c.procs, max(1, sc.concurrency)), timeout=15.0)

    def _start_gateway(self, mock_port: int, workers: int) -> tuple[GatewayProc | None, dict[str, bool]]:
        c = self.cfg
        err = None
        for translated in (True, False):
            redis_url = self._redis.url if self._redis is not None else None
            gw = GatewayProc(gateway_config(mock_port, translated, c.controls, redis_url), workers, c.gateway_cmd,
                             c.gateway_env, c.gateway_cwd)
            try:
                if c.controls in KEYED_CONTROLS:
                    # The gateway's default store is ./fastgw.db in its working directory.
                    extra = LIMIT_ARGS if c.controls.startswith("limits") else None
                    self.bench_key = create_virtual_key(gw.cmd, f"sqlite:///{gw.cwd}/fastgw.db", c.gateway_env, extra)
                    P.BENCH_KEY = self.bench_key
                cold = gw.start()
            except GatewayError as e:
                gw.close()
                err = str(e)
                continue
            self.gateway_info["available"] = True
            self.gateway_info["cold_start_s"].append(round(cold, 3))
            support = (probe_support(gw.port) if translated
                       else {"anthropic": False, "gemini": False, "messages": False})
            self.gateway_info["support"] = support
            self.progress.note(f"gateway up on :{gw.port} (workers={workers}) cold start {cold * 1000:.0f} ms; "
                               f"translated providers: {support}")
            return gw, support
        self.gateway_info["error"] = err
        self.progress.note(f"gateway unavailable, running direct only: {(err or '').splitlines()[0]}")
        return None, {}

    def _run(self, sc: Scenario, side: str, port: int, reqs: list[Any], meter_root: int | None) -> dict[str, Any]:
        spec = self._spec(sc, port, reqs)
        self.progress.begin(f"{sc.key} w={self._w} {side}")
        meter = TreeMeter(meter_root).start() if meter_root else None
        # The loopback redis-server's CPU, so a Redis-backed mode shows what Redis spends per request.
        redis_pid = self._redis.proc.pid if meter and self._redis is not None and self._redis.proc else None
        redis_t0 = cpu_ticks(redis_pid) if redis_pid else 0
        last = [0.0]

        def tick(issued: int, elapsed: float) -> None:
            self.progress.tick(issued, elapsed)
            if meter is not None and elapsed - last[0] >= 0.25:
                last[0] = elapsed
                meter.sample()

        res = run_load(spec, tick)
        run: dict[str, Any] = {"result": res}
        if meter is not None:
            m = meter.stop()
            run["gw_cpu_s"] = m["cpu_s"]
            run["gw_cpu_us_per_req"] = m["cpu_s"] * 1e6 / max(1, res.issued)
            run["gw_peak_rss_kb"] = m["peak_rss_kb"]
            run["gw_hwm_kb"] = m["hwm_kb"]
            run["gw_procs"] = m["procs"]
            if redis_pid:
                run["redis_cpu_s"] = max(0, cpu_ticks(redis_pid) - redis_t0) / CLK_TCK
        s = res.summary()
        self.progress.end(f"{s['rps']:.0f} req/s  ttfb p50 {s['ttfb_us']['p50'] / 1000:.2f} ms  "
                          f"errors {s['errors']}")
        return run

    def _entry(self, sc: Scenario, side: str, runs: list[dict[str, Any]], status: str = "ok") -> dict[str, Any]:
        e: dict[str, Any] = {"scenario": sc.name, "description": sc.description, "kind": sc.kind,
                             "profile": sc.profile, "concurrency": sc.concurrency, "workers": self._w,
                             "side": side, "status": status}
        if self._rate(sc):
            e["rate"] = self._rate(sc)
        if not runs:
            self.entries.append(e)
            return e
        merged = LoadResult()
        for r in runs:
            merged.merge(r["result"])
        rps = [r["result"].rps for r in runs]
        e.update(merged.summary())
        e["rps"] = round(sum(rps) / len(rps), 1)
        e["rps_runs"] = [round(x, 1) for x in rps]
        e["loadgen_cpu_us_per_req"] = round(merged.cpu_us_per_req, 2)
        if side == "gateway":
            cpu = sum(r["gw_cpu_s"] for r in runs)
            e["gw_cpu_us_per_req"] = round(cpu * 1e6 / max(1, merged.issued), 1)
            e["gw_cpu_runs"] = [round(r["gw_cpu_us_per_req"], 1) for r in runs]
            e["gw_peak_rss_mb"] = round(max(r["gw_peak_rss_kb"] for r in runs) / 1024, 1)
            e["gw_hwm_mb"] = round(max(r["gw_hwm_kb"] for r in runs) / 1024, 1)
            e["gw_procs"] = max(r["gw_procs"] for r in runs)
            if all("redis_cpu_s" in r for r in runs):
                e["redis_cpu_us_per_req"] = round(sum(r["redis_cpu_s"] for r in runs) * 1e6 / max(1, merged.issued), 1)
        if sc.kind in ("paced", "stall"):
            interval_us = int(PROFILES[sc.profile].interval_ms * 1000)
            e["upstream_interval_us"] = interval_us
            e["stall_us"] = max(0, merged.gap.max - interval_us)
        if status == "ok" and e.get("errors"):
            e["status"] = "errors"
        self.entries.append(e)
        return e

    def _rss_after_n(self, gw: GatewayProc, port: int) -> None:
        n = self.cfg.rss_requests
        if n <= 0:
            return
        before = sample_tree(gw.pid)
        self.progress.note(f"RSS check: {n} streaming requests through the gateway ...")
        spec = LoadSpec("127.0.0.1", port, [P.openai_request(f"127.0.0.1:{port}", "chat", "gpt-4o-mini", True)],
                        concurrency=64, duration=max(30.0, n / 500), warmup=0.0, max_requests=n, timeout=15.0)
        res = run_load(spec)
        after = sample_tree(gw.pid)
        self.gateway_info["rss_after_n"] = {
            "requests": res.issued, "errors": res.error_count, "workers": self._w,
            "rss_before_mb": round(before.rss_kb / 1024, 1), "rss_after_mb": round(after.rss_kb / 1024, 1),
            "hwm_mb": round(after.hwm_kb / 1024, 1), "procs": len(after.pids),
        }
        self.progress.note(f"RSS after {res.issued} requests: {before.rss_kb / 1024:.1f} -> {after.rss_kb / 1024:.1f} MiB")

    def run(self) -> dict[str, Any]:
        t0 = time.time()
        self.start_redis()
        try:
            return self._run_all(t0)
        finally:
            self.stop_redis()

    def start_redis(self) -> None:
        """A loopback redis-server for the modes that need one (stopped by :meth:`stop_redis`)."""
        c = self.cfg
        self._redis = RedisProc().start() if c.controls in REDIS_CONTROLS and not c.direct_only else None

    def stop_redis(self) -> None:
        if self._redis is not None:
            self._redis.stop()
            self._redis = None

    def _run_all(self, t0: float) -> dict[str, Any]:
        c = self.cfg
        for w in c.workers:
            self._w = w
            for profile in ("fast", "paced"):
                scs = [s for s in self.scenarios if s.profile == profile]
                if not scs:
                    continue
                with MockProc(PROFILES[profile], c.mock_procs) as mock:
                    gw, support = (None, {}) if c.direct_only else self._start_gateway(mock.port, w)
                    try:
                        self._run_profile(scs, mock, gw, support)
                        if gw is not None and profile == "fast" and gw.alive():
                            self._rss_after_n(gw, gw.port)
                    finally:
                        if gw is not None:
                            gw.close()
        return self.result(t0)

    def result(self, t0: float) -> dict[str, Any]:
        c = self.cfg
        return {
            "meta": {
                "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t0)),
                "elapsed_s": round(time.time() - t0, 1), "git_rev": git_rev(), "label": c.label, "controls": c.controls,
                "python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
                "config": {k: v for k, v in vars(c).items() if k not in ("gateway_env",)},
            },
            "gateway": self.gateway_info,
            "entries": self.entries,
        }

    def _run_profile(self, scs: list[Scenario], mock: MockProc, gw: GatewayProc | None,
                     support: dict[str, bool]) -> None:
        c = self.cfg
        for sc in scs:
            if sc.needs and gw is not None and not support.get(sc.needs):
                for side in ("direct", "gateway"):
                    self._entry(sc, side, [], status="n/a")
                self.progress.n += c.repeats * 2
                self.progress.note(f"{sc.key}: n/a (gateway has no {sc.needs} provider support)")
                continue
            direct_reqs = sc.direct(f"127.0.0.1:{mock.port}")
            runs: dict[str, list[dict[str, Any]]] = {"direct": [], "gateway": []}
            for _ in range(c.repeats):  # A B A B: drift hits both sides alike
                runs["direct"].append(self._run(sc, "direct", mock.port, direct_reqs, None))
                if gw is not None and gw.alive():
                    gw_reqs = sc.gateway(f"127.0.0.1:{gw.port}")
                    runs["gateway"].append(self._run(sc, "gateway", gw.port, gw_reqs, gw.pid))
                elif not c.direct_only:
                    self.progress.n += 1
            self._entry(sc, "direct", runs["direct"])
            if not c.direct_only:
                self._entry(sc, "gateway", runs["gateway"], status="ok" if runs["gateway"] else "n/a")
