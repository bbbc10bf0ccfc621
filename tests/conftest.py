from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from gateway import GatewayProcess
from redis_server import redis_server, redis_unix_server  # noqa: F401  (fixtures for every test module)
from stores import pg_dsn, store_url  # noqa: F401  (fixtures for every test module)
from upstream_server import UpstreamServer, json_reply


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[UpstreamServer]:
    server = UpstreamServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def a() -> Iterator[UpstreamServer]:
    """A module's first own upstream (routes with two targets); its handler is the module's to set."""
    server = UpstreamServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def b() -> Iterator[UpstreamServer]:
    """A module's second own upstream, like :func:`a`."""
    server = UpstreamServer()
    yield server
    server.close()


@pytest.fixture
def upstream(upstream_server: UpstreamServer) -> UpstreamServer:
    """The session's upstream, reset: default handler, no recorded requests."""
    upstream_server.handler = lambda r: json_reply(b'{"ok":true}')
    upstream_server.requests.clear()
    return upstream_server


def basic_config(upstream_url: str, extra: str = "") -> str:
    """The minimal config (one OpenAI-compatible provider), pointed at the test upstream."""
    return f"""
providers:
  - name: local
    type: openai
    base_url: {upstream_url}/v1
    api_key: sk-test
    models: [gpt-4o-mini]
{extra}"""


CLAUDE = "claude-haiku-4-5"
GEMINI = "gemini-2.5-flash"


def translated_config(upstream_url: str, extra: str = "") -> str:
    """Two translated providers (Anthropic, Gemini) pointed at the test upstream."""
    return f"""
providers:
  - name: claude
    type: anthropic
    base_url: {upstream_url}
    api_key: k-anthropic
    models: [{CLAUDE}]
  - name: gem
    type: gemini
    base_url: {upstream_url}
    api_key: k-gemini
    models: [{GEMINI}]
{extra}"""


@pytest.fixture(scope="module")
def gateway(upstream_server: UpstreamServer) -> Iterator[GatewayProcess]:
    """A gateway on the minimal config, plus an alias and an o-series model."""
    config = basic_config(upstream_server.url) + f"""
  - name: reasoning
    type: openai
    base_url: {upstream_server.url}/v1
    api_key: sk-other
    models: [o4-mini, gpt-4o-mini-dup]
  - name: dup
    type: openai-compatible
    base_url: {upstream_server.url}/v1
    models: [gpt-4o-mini-dup]
aliases:
  fast: local/gpt-4o-mini
  chain: [local/gpt-4o-mini, reasoning/o4-mini]
"""
    gw = GatewayProcess(config)
    yield gw
    gw.stop()
