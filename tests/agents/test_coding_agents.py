"""Claude Code and Codex CLI, run headless as their users run them, through a real gateway to
providers of every type (the test upstream answering in each provider's wire format).

The agents are npm packages (``@anthropic-ai/claude-code``, ``@openai/codex``), pinned in
``tests/agents/package.json`` / ``package-lock.json``; ``scripts/test`` installs them with ``npm ci``
into ``.cache/agents`` and exports ``FASTGW_AGENTS_DIR``. These tests skip when the commands are not
found in ``$FASTGW_AGENTS_DIR/node_modules/.bin`` or on ``PATH`` (the reason says why: no Node, or
the install failed).

They reach only 127.0.0.1: base URLs point at the gateway, telemetry, updates and Codex's plugin
sync are off, and every proxy variable points at a loopback listener that records and refuses
what the agent tries to reach elsewhere (so nothing waits on the internet); each test asserts it
saw nothing. Every agent run is bounded by a timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import GEMINI
from gateway import GatewayProcess
from upstream_server import Received, Reply, UpstreamServer, json_reply, sse_reply

from bench.wire import anthropic_sse, gemini_sse, openai_chat_sse
from bench.wire_responses import responses_sse


def agent(name: str) -> str | None:
    base = os.environ.get("FASTGW_AGENTS_DIR")
    if base:
        candidate = Path(base) / "node_modules" / ".bin" / name
        if candidate.exists():
            return str(candidate)
    return shutil.which(name)


def missing(package: str) -> str:
    """Why an agent is not there, for the skip reason."""
    if shutil.which("node") is None:
        return f"{package} is not installed: Node.js/npm are missing (scripts/test installs them as root)"
    if os.environ.get("FASTGW_AGENTS_DIR"):
        return (f"{package} is not in $FASTGW_AGENTS_DIR: the npm install of tests/agents/package-lock.json "
                "failed (no registry?), see scripts/test's warning")
    return f"{package} is not installed: run scripts/test (it installs the pinned agents into .cache/agents)"


CLAUDE = agent("claude")
CODEX = agent("codex")
QUIET = {"DISABLE_TELEMETRY": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1",
         "DISABLE_ERROR_REPORTING": "1", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
         "CODEX_DISABLE_UPDATE_CHECK": "1"}
# Codex: no update check, no plugin marketplace sync (github.com, chatgpt.com), no analytics.
CODEX_QUIET = ["-c", "check_for_update_on_startup=false", "-c", "features.plugins=false",
               "-c", "analytics.enabled=false"]
TIMEOUT = 120  # seconds one agent run may take (a hung agent fails, it does not stall the suite)


class Outside:
    """A loopback listener every proxy variable points at: it records the first line of each
    connection (``CONNECT host:443 ...``: where the agent tried to go) and closes it at once."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    head = conn.recv(1024)
                except OSError:
                    head = b"?"
                self.seen.append(head.split(b"\r\n", 1)[0].decode("latin-1"))

    def env(self) -> dict[str, str]:
        return {k: self.url for k in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy",
                                      "all_proxy")}

    def close(self) -> None:
        self._sock.close()


@pytest.fixture(scope="module")
def outside() -> Iterator[Outside]:
    o = Outside()
    yield o
    o.close()


@pytest.fixture(scope="module")
def agw(upstream_server: UpstreamServer) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(f"""
master_key: sk-agents
providers:
  - name: claude
    type: anthropic
    base_url: {upstream_server.url}
    api_key: k-anthropic
    models: [claude-sonnet-4-5]
  - name: oai
    type: openai
    base_url: {upstream_server.url}/v1
    api_key: sk-oai
    models: [gpt-4o-mini, gpt-5]
  - name: gem
    type: gemini
    base_url: {upstream_server.url}
    api_key: k-gemini
    models: [{GEMINI}]
""")
    yield gw
    gw.stop()


def _has_tool_result(body: dict[str, Any]) -> bool:
    text = json.dumps(body.get("messages") or body.get("contents") or body.get("input"))
    return any(k in text for k in ('"tool_result"', '"role": "tool"', "functionResponse", "function_call_output"))


def tool_outputs(body: dict[str, Any]) -> str:
    """The text of every tool result in a provider request (Anthropic, chat or Gemini shape)."""
    out = []
    for msg in body.get("messages") or ():
        if msg.get("role") == "tool":
            out.append(json.dumps(msg.get("content")))
        for block in msg.get("content") if isinstance(msg.get("content"), list) else ():
            if isinstance(block, dict) and block.get("type") == "tool_result":
                out.append(json.dumps(block.get("content")))
    for item in body.get("input") if isinstance(body.get("input"), list) else ():
        if isinstance(item, dict) and item.get("type") == "function_call_output":
            out.append(json.dumps(item.get("output")))
    for content in body.get("contents") or ():
        for part in content.get("parts") or ():
            if "functionResponse" in part:
                out.append(json.dumps(part["functionResponse"].get("response")))
    return "\n".join(out)


def scripted(first: list[tuple[Any, ...]], then: list[tuple[Any, ...]]):  # type: ignore[no-untyped-def]
    """Answer ``first`` until the conversation holds a tool result, then ``then``; in the wire
    format of whichever provider the gateway called."""

    def handler(r: Received) -> Reply:
        try:
            body = json.loads(r.body) if r.body else {}
        except ValueError:
            body = {}
        script = then if _has_tool_result(body) else first
        if r.target.startswith("/v1/messages/count_tokens"):
            return json_reply(b'{"input_tokens": 10}')
        if r.target.startswith("/v1/messages"):
            return sse_reply(anthropic_sse(script))
        if r.target.startswith("/v1/chat/completions"):
            return sse_reply(openai_chat_sse(script))
        if r.target.startswith("/v1/responses"):
            return sse_reply(responses_sse(script))
        if ":streamGenerateContent" in r.target:
            return sse_reply([p + b"\r\n\r\n" for p in gemini_sse(script).split(b"\r\n\r\n") if p])
        return json_reply(b'{"error":{"message":"not here","type":"invalid_request_error"}}', status=404)

    return handler


def run(outside: Outside, cmd: list[str], env: dict[str, str], cwd: str) -> subprocess.CompletedProcess[str]:
    """Run an agent with only ``env`` (plus PATH and the quiet settings), stdin closed, bounded;
    assert it tried to reach nothing but 127.0.0.1."""
    full = {"PATH": os.environ["PATH"], **QUIET, **outside.env(), **env}
    outside.seen.clear()
    proc = subprocess.run(cmd, env=full, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, check=False,
                          stdin=subprocess.DEVNULL)
    assert outside.seen == [], f"the agent tried to reach beyond 127.0.0.1: {outside.seen}"
    return proc


def codex(outside: Outside, agw: GatewayProcess, model: str, prompt: str,
          home: str) -> subprocess.CompletedProcess[str]:
    """``codex exec`` with a fresh ``home`` (its config, sessions and working directory)."""
    assert CODEX is not None
    provider = f'{{name="fastgw", base_url="{agw.url}/v1", wire_api="responses", env_key="FASTGW_KEY"}}'
    return run(outside, [CODEX, "exec", "--skip-git-repo-check", "-m", model, "-c", "model_provider=fastgw",
                         "-c", f"model_providers.fastgw={provider}", *CODEX_QUIET, prompt],
               {"HOME": home, "CODEX_HOME": home, "FASTGW_KEY": "sk-agents"}, home)


# Which path each model takes upstream (the test upstream serves every provider's wire format).
UPSTREAM_PATH = {"claude-sonnet-4-5": "/v1/messages", "gpt-4o-mini": "/v1/chat/completions",
                 "gpt-5": "/v1/responses", GEMINI: ":streamGenerateContent"}


def posts(upstream: UpstreamServer) -> list[Received]:
    return [r for r in upstream.requests if r.method == "POST" and "count_tokens" not in r.target]


@pytest.mark.skipif(CLAUDE is None, reason=missing("Claude Code (@anthropic-ai/claude-code)"))
@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "gpt-4o-mini", GEMINI])
def test_claude_code_runs_a_tool(agw, upstream, outside, model, tmp_path):
    """Claude Code over /v1/messages: the model asks for Bash, Claude Code runs it and sends the
    output back (translated for OpenAI and Gemini), the model finishes."""
    assert CLAUDE is not None
    upstream.handler = scripted([("thinking", "Run it."), ("tool", "Bash", {"command": "echo fastgw-ok",
                                                                            "description": "Print"})],
                                [("text", "The command printed fastgw-ok.")])
    home = str(tmp_path)
    proc = run(outside, [CLAUDE, "-p", "run echo fastgw-ok with bash", "--model", model, "--allowedTools", "Bash",
                         "--output-format", "json"],
               {"HOME": home, "ANTHROPIC_BASE_URL": agw.url, "ANTHROPIC_API_KEY": "sk-agents"}, home)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    result = json.loads(proc.stdout)
    assert result["is_error"] is False and result["result"] == "The command printed fastgw-ok."
    calls = posts(upstream)
    assert len(calls) >= 2 and all(UPSTREAM_PATH[model] in c.target for c in calls)
    first, last = json.loads(calls[0].body), json.loads(calls[-1].body)
    assert not _has_tool_result(first) and _has_tool_result(last)
    assert "fastgw-ok" in tool_outputs(last)  # the tool ran; its output went back
    assert "Bash" in json.dumps(first.get("tools"))  # Claude Code's tools reached the provider


@pytest.mark.skipif(CODEX is None, reason=missing("Codex CLI (@openai/codex)"))
@pytest.mark.parametrize("model", ["gpt-5", "claude-sonnet-4-5", GEMINI])
def test_codex_exec(agw, upstream, outside, model, tmp_path):
    upstream.handler = scripted([("text", "Hello from fastgw.")], [("text", "Hello from fastgw.")])
    proc = codex(outside, agw, model, "say hi", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Hello from fastgw." in proc.stdout
    calls = posts(upstream)
    assert calls and all(UPSTREAM_PATH[model] in c.target for c in calls)
    assert "say hi" in calls[0].body.decode()


@pytest.mark.skipif(CODEX is None, reason=missing("Codex CLI (@openai/codex)"))
@pytest.mark.parametrize("model", ["gpt-5", "claude-sonnet-4-5", GEMINI])
def test_codex_runs_a_tool(agw, upstream, outside, model, tmp_path):
    """Codex over /v1/responses: the model calls exec_command, Codex runs it and sends the output
    back (relayed to OpenAI, translated to Anthropic and Gemini), the model finishes."""
    upstream.handler = scripted([("tool", "exec_command", {"cmd": "echo fastgw-codex-ok"})],
                                [("text", "It printed fastgw-codex-ok.")])
    proc = codex(outside, agw, model, "run echo fastgw-codex-ok", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "It printed fastgw-codex-ok." in proc.stdout
    calls = posts(upstream)
    assert len(calls) >= 2 and all(UPSTREAM_PATH[model] in c.target for c in calls)
    last = json.loads(calls[-1].body)
    assert _has_tool_result(last) and "fastgw-codex-ok" in tool_outputs(last)
