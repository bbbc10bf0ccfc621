"""Launching and probing the processes under test: the mock upstream and ``fastgw serve``."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.mock_upstream import Knobs

REPO_ROOT = Path(__file__).resolve().parent.parent
ANTHROPIC_MODEL = "claude-3-5-haiku-latest"
GEMINI_MODEL = "gemini-2.0-flash"
OPENAI_MODEL = "gpt-4o-mini"
# Routes over three deployments of the mock (their targets keep the name: the bytes go untouched);
# one of FAILOVER_MODEL's deployments answers 503 to every request (the mock's error knobs).
ROUTED_MODEL = "routed-gpt"
FAILOVER_MODEL = "failover-gpt"
# The same route shape whose deployments have provider limits (never reached): counted per attempt.
LIMITED_MODEL = "limited-gpt"


class GatewayError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_call(port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
              timeout: float = 5.0, host: str = "127.0.0.1") -> tuple[int, bytes]:
    """One blocking HTTP/1.1 exchange (Connection: close); (0, b"") when it fails."""
    hdrs = {"Host": f"{host}:{port}", "Connection": "close", **(headers or {})}
    if body:
        hdrs.setdefault("Content-Type", "application/json")
        hdrs["Content-Length"] = str(len(body))
    raw = f"{method} {path} HTTP/1.1\r\n".encode() + b"".join(f"{k}: {v}\r\n".encode() for k, v in hdrs.items())
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(raw + b"\r\n" + body)
            chunks = []
            while True:
                d = s.recv(65536)
                if not d:
                    break
                chunks.append(d)
    except OSError:
        return 0, b""
    resp = b"".join(chunks)
    try:
        return int(resp[9:12]), resp.partition(b"\r\n\r\n")[2]
    except ValueError:
        return 0, resp


def wait_ok(port: int, path: str, deadline: float, proc: subprocess.Popen[bytes] | None = None,
            interval: float = 0.005) -> bool:
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        if http_call(port, "GET", path, timeout=1.0)[0] == 200:
            return True
        time.sleep(interval)
    return False


def _pdeathsig() -> None:
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def _stop_group(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the process group we created for ``proc`` (its own session), then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # leftover workers of this group, if any
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(2)


class MockProc:
    """``python -m bench.mock_upstream`` as a subprocess on a free port."""

    def __init__(self, knobs: Knobs, procs: int = 1, port: int | None = None) -> None:
        self.knobs = knobs
        self.procs = procs
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> MockProc:
        k = self.knobs
        cmd = [sys.executable, "-m", "bench.mock_upstream", "--port", str(self.port), "--procs", str(self.procs),
               "--ttfb-ms", str(k.ttfb_ms), "--chunks", str(k.chunks), "--interval-ms", str(k.interval_ms),
               "--chunk-size", str(k.chunk_size), "--error-rate", str(k.error_rate),
               "--error-status", str(k.error_status), "--drop-after", str(k.drop_after)]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=_pdeathsig, start_new_session=True)
        if not wait_ok(self.port, "/health", time.monotonic() + timeout, self.proc):
            self.stop()
            raise RuntimeError("mock upstream did not start")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc, 3.0)
            self.proc = None

    def __enter__(self) -> MockProc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# Production controls per ``--controls`` mode, appended to the config: ``default`` is the
# gateway's own defaults (request log on, stream usage injected, metrics); ``off`` turns the
# request log and usage injection off; ``all`` is the default plus a virtual key on every
# request (key check, spend) and a price for the bench model (cost accounting). ``limits``
# is ``all`` with rpm, tpm and concurrency limits on the key (never reached), counted in the
# worker; ``limits-redis`` counts them in a redis-server on loopback; ``cache`` is ``all``
# with the response cache on the chat and Responses routes (every request after the first
# of a scenario is a hit); ``cache-redis`` keeps those answers in a redis-server on loopback
# (every hit is one Redis GET, a miss also takes and releases the coalescing lock).
_PRICE = "pricing:\n  gpt-4o-mini: {input: 0.15, output: 0.6, cached_input: 0.075}\n"
_CACHE = "cache:\n  routes:\n    /v1/chat/completions: {ttl: 3600}\n    /v1/responses: {ttl: 3600}\n"
CONTROLS_CONFIG = {
    "default": "",
    "off": "logging:\n  enabled: false\nusage:\n  inject_stream_usage: false\n",
    "all": _PRICE,
    "limits": _PRICE,
    "limits-redis": _PRICE,
    "cache": _PRICE + _CACHE,
    "cache-redis": _PRICE + _CACHE + "  backend: redis\n",
}
# Modes that send a virtual key, and the limits ``fastgw keys create`` gives it.
KEYED_CONTROLS = ("all", "limits", "limits-redis", "cache", "cache-redis")
# Modes that start a redis-server on loopback for the gateway.
REDIS_CONTROLS = ("limits-redis", "cache-redis")
LIMIT_ARGS = ["--rpm", "1000000000", "--tpm", "1000000000000", "--concurrency", "1000000"]


def create_virtual_key(cmd: list[str], store_url: str, env: dict[str, str] | None = None,
                       extra: list[str] | None = None) -> str:
    """``fastgw keys create`` into ``store_url`` (``extra``: more flags); returns the plaintext key."""
    out = subprocess.run([*cmd, "keys", "create", "--name", "bench", "--store", store_url, *(extra or [])],
                         capture_output=True, text=True, env=env, timeout=60)
    key = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
    if not key.startswith("sk-fgw-"):
        raise GatewayError(f"could not create a virtual key: {out.stderr.strip()[:300]}")
    return key


def gateway_config(mock_port: int, translated: bool = True, controls: str = "default",
                   redis_url: str | None = None) -> str:
    """The gateway's YAML config: an OpenAI provider, plus (``translated``) Anthropic and Gemini
    ones and the routing scenarios' routes. Without ``translated`` the config is the plain
    OpenAI provider alone, which any revision of fastgw accepts (``scripts/compare-revs``)."""
    text = f"""providers:
  - name: local
    type: openai
    base_url: http://127.0.0.1:{mock_port}/v1
    api_key: sk-test
    models: [{OPENAI_MODEL}]
"""
    if translated:
        text += f"""  - name: anth
    type: anthropic
    base_url: http://127.0.0.1:{mock_port}
    api_key: sk-ant-test
    models: [{ANTHROPIC_MODEL}]
  - name: gem
    type: gemini
    base_url: http://127.0.0.1:{mock_port}
    api_key: gm-test
    models: [{GEMINI_MODEL}]
"""
    if translated:
        text += routes_config(mock_port)
    text += CONTROLS_CONFIG[controls]
    if redis_url:
        text += f"redis:\n  url: {redis_url}\n  timeout: 2\n"
    return text



class RedisProc:
    """A throwaway ``redis-server`` on a free loopback port, persistence off."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProc:
        import shutil

        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise GatewayError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc, 3.0)
            self.proc = None


def routes_config(mock_port: int) -> str:
    """Providers and routes for the routing scenarios (retries and breakers at their defaults)."""
    text = ""
    models = {"r": ROUTED_MODEL, "f": FAILOVER_MODEL, "l": LIMITED_MODEL}
    for name, extra in (("r1", ""), ("r2", ""), ("r3", ""), ("f1", ""), ("f2", ""),
                        ("f3", ', headers: {x-mock-error-rate: "1", x-mock-error-status: "503"}'),
                        ("l1", ""), ("l2", ""), ("l3", "")):
        text += (f"  - {{name: {name}, type: openai, base_url: 'http://127.0.0.1:{mock_port}/v1', "
                 f"api_key: sk-test, models: [{models[name[0]]}]{extra}}}\n")
    text += "routes:\n"
    for prefix, model in models.items():
        targets = ", ".join(f"{prefix}{i}/{model}" for i in (1, 2, 3))
        text += f"  {model}: {{targets: [{targets}], strategy: weighted}}\n"
    text += "limits:\n  providers:\n"
    for i in (1, 2, 3):
        text += f"    l{i}: {{rpm: 1000000000, tpm: 1000000000000, concurrency: 1000000}}\n"
    return text


def default_gateway_cmd() -> list[str]:
    """``fastgw`` beside this interpreter, else the checkout's ``.venv`` one (a script run
    with the system python), else this checkout's package on this interpreter."""
    root = Path(__file__).resolve().parent.parent
    for exe in (Path(sys.executable).parent / "fastgw", root / ".venv" / "bin" / "fastgw"):
        if exe.exists():
            return [str(exe)]
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(root)!r}); from fastgw.cli import main; "
                                  "sys.exit(main())"]


class GatewayProc:
    """``fastgw serve --config FILE --host 127.0.0.1 --port N --workers W`` in its own session."""

    def __init__(self, config_text: str, workers: int = 1, cmd: list[str] | None = None,
                 env: dict[str, str] | None = None, cwd: str | None = None, port: int | None = None) -> None:
        self.config_text = config_text
        self.workers = workers
        self.cmd = cmd or default_gateway_cmd()
        self.env = env
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.tmp = tempfile.TemporaryDirectory(prefix="fastgw-bench-")
        # The default store (./fastgw.db) and anything else the gateway writes stay out of the checkout.
        self.cwd = cwd or self.tmp.name
        self.log_path = Path(self.tmp.name) / "gateway.log"
        self.cold_start_s: float | None = None

    def start(self, timeout: float = 30.0) -> float:
        """Start it and wait for the first 200 from /health; returns the cold start in seconds."""
        cfg = Path(self.tmp.name) / "config.yaml"
        cfg.write_text(self.config_text)
        argv = [*self.cmd, "serve", "--config", str(cfg), "--host", "127.0.0.1", "--port", str(self.port),
                "--workers", str(self.workers)]
        log = open(self.log_path, "wb")  # noqa: SIM115 - handed to the child, closed below
        t0 = time.monotonic()
        try:
            self.proc = subprocess.Popen(argv, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, preexec_fn=_pdeathsig, start_new_session=True)
        except OSError as e:
            log.close()
            raise GatewayError(f"cannot run {argv[0]}: {e}") from e
        log.close()
        if not wait_ok(self.port, "/health", t0 + timeout, self.proc):
            rc = self.proc.poll()
            self.stop()
            raise GatewayError(f"fastgw serve not healthy (exit={rc}); log tail:\n{self.log_tail()}")
        self.cold_start_s = time.monotonic() - t0
        return self.cold_start_s

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc)
            self.proc = None

    def close(self) -> None:
        self.stop()
        self.tmp.cleanup()

    def __enter__(self) -> GatewayProc:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
