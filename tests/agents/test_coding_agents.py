"""Claude Code and Codex CLI, run headless as their users run them, through a real gateway to
providers of every type (the test upstream answering in each provider's wire format).

The agents are npm packages (``@anthropic-ai/claude-code``, ``@openai/codex``); these tests skip
when their commands are not found on ``PATH`` or in ``$FASTGW_AGENTS_DIR/node_modules/.bin``
(install: ``npm install --prefix "$FASTGW_AGENTS_DIR" @anthropic-ai/claude-code @openai/codex``).
They reach only 127.0.0.1: base URLs point at the gateway, telemetry and updates are off.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import GEMINI
from gateway import GatewayProcess
from upstream_server import Received, Reply, UpstreamServer, json_reply, sse_reply

from bench.wire import anthropic_sse, gemini_sse, openai_chat_sse, openai_responses


def agent(name: str) -> str | None:
    found = shutil.which(name)
    base = os.environ.get("FASTGW_AGENTS_DIR")
    if found is None and base:
        candidate = Path(base) / "node_modules" / ".bin" / name
        found = str(candidate) if candidate.exists() else None
    return found


CLAUDE = agent("claude")
CODEX = agent("codex")
QUIET = {"DISABLE_TELEMETRY": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1",
         "DISABLE_ERROR_REPORTING": "1", "NO_PROXY": "127.0.0.1", "CODEX_DISABLE_UPDATE_CHECK": "1"}


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
            rep = openai_responses("gpt-5", True, 2, 6)
            return sse_reply(b"".join(rep.prefix + rep.content + rep.suffix))
        if ":streamGenerateContent" in r.target:
            return sse_reply([p + b"\r\n\r\n" for p in gemini_sse(script).split(b"\r\n\r\n") if p])
        return json_reply(b'{"error":{"message":"not here","type":"invalid_request_error"}}', status=404)

    return handler


def run(cmd: list[str], env: dict[str, str], cwd: str) -> subprocess.CompletedProcess[str]:
    full = {"PATH": os.environ["PATH"], **QUIET, **env}
    return subprocess.run(cmd, env=full, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(CLAUDE is None, reason="Claude Code (@anthropic-ai/claude-code) is not installed")
@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "gpt-4o-mini", GEMINI])
def test_claude_code_headless(agw, upstream, model):
    assert CLAUDE is not None
    upstream.handler = scripted([("thinking", "Run it."), ("tool", "Bash", {"command": "echo fastgw-ok",
                                                                            "description": "Print"})],
                                [("text", "The command printed fastgw-ok.")])
    home = tempfile.mkdtemp(prefix="fastgw-claude-")
    proc = run([CLAUDE, "-p", "run echo fastgw-ok with bash", "--model", model, "--allowedTools", "Bash",
                "--output-format", "json"],
               {"HOME": home, "ANTHROPIC_BASE_URL": agw.url, "ANTHROPIC_API_KEY": "sk-agents"}, home)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    result = json.loads(proc.stdout)
    assert result["is_error"] is False and result["result"] == "The command printed fastgw-ok."
    calls = [r for r in upstream.requests if r.method == "POST"]
    assert len(calls) >= 2 and _has_tool_result(json.loads(calls[-1].body))
    assert "fastgw-ok" in tool_outputs(json.loads(calls[-1].body))  # the tool ran; its output went back


@pytest.mark.skipif(CODEX is None, reason="Codex CLI (@openai/codex) is not installed")
@pytest.mark.parametrize("model", ["gpt-5", "claude-sonnet-4-5", GEMINI])
def test_codex_exec(agw, upstream, model):
    assert CODEX is not None
    upstream.handler = scripted([("text", "Hello from fastgw.")], [("text", "Hello from fastgw.")])
    home = tempfile.mkdtemp(prefix="fastgw-codex-")
    provider = f'{{name="fastgw", base_url="{agw.url}/v1", wire_api="responses", env_key="FASTGW_KEY"}}'
    proc = run([CODEX, "exec", "--skip-git-repo-check", "-m", model, "-c", "model_provider=fastgw",
                "-c", f"model_providers.fastgw={provider}", "-c", "check_for_update_on_startup=false",
                "say hi"], {"HOME": home, "CODEX_HOME": home, "FASTGW_KEY": "sk-agents"}, home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = "The quick" if model == "gpt-5" else "Hello from fastgw."
    assert expected in proc.stdout
    posts = [r for r in upstream.requests if r.method == "POST"]
    assert posts, "the agent's request never reached the upstream"


@pytest.mark.skipif(CODEX is None, reason="Codex CLI (@openai/codex) is not installed")
@pytest.mark.parametrize("model", ["claude-sonnet-4-5", GEMINI])
def test_codex_runs_a_tool_through_a_translated_provider(agw, upstream, model):
    """The model calls Codex's exec_command; Codex runs it and sends the output back, translated."""
    assert CODEX is not None
    upstream.handler = scripted([("tool", "exec_command", {"cmd": "echo fastgw-codex-ok"})],
                                [("text", "It printed fastgw-codex-ok.")])
    home = tempfile.mkdtemp(prefix="fastgw-codex-")
    provider = f'{{name="fastgw", base_url="{agw.url}/v1", wire_api="responses", env_key="FASTGW_KEY"}}'
    proc = run([CODEX, "exec", "--skip-git-repo-check", "-m", model, "-c", "model_provider=fastgw",
                "-c", f"model_providers.fastgw={provider}", "-c", "check_for_update_on_startup=false",
                "run echo fastgw-codex-ok"], {"HOME": home, "CODEX_HOME": home, "FASTGW_KEY": "sk-agents"}, home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "It printed fastgw-codex-ok." in proc.stdout
    posts = [r for r in upstream.requests if r.method == "POST"]
    assert len(posts) >= 2 and _has_tool_result(json.loads(posts[-1].body))
    assert "fastgw-codex-ok" in tool_outputs(json.loads(posts[-1].body))
