"""Start a real ``fastgw serve`` process for end-to-end tests."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    """``fastgw serve --config FILE --port N`` in a subprocess; logs kept in a file."""

    def __init__(self, config_text: str | None, *, env: dict[str, str] | None = None, workers: int = 1,
                 args: list[str] | None = None) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="fastgw-test-"))
        cmd = [sys.executable, "-m", "fastgw", "serve", "--port", str(self.port), "--workers", str(workers)]
        if config_text is not None:
            self.config_path = self.dir / "config.yaml"
            self.config_path.write_text(config_text)
            cmd += ["--config", str(self.config_path)]
        cmd += args or []
        self.log_path = self.dir / "gateway.log"
        base_env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k not in (
            "FASTGW_MASTER_KEY", "OLLAMA_BASE_URL", "VLLM_BASE_URL", "AZURE_OPENAI_ENDPOINT")}
        base_env.update(env or {})
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        # The embedded default store is ./fastgw.db: each gateway gets its own directory.
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=base_env,
                                     start_new_session=True, cwd=self.dir)
        self.wait_healthy()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_healthy(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fastgw exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/ready")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"fastgw did not become ready:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(x) for x in out.stdout.split()]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode
