"""TLS to upstreams, with a CA and certificates made at test time (trustme): a private CA
trusted through ``ca_bundle``, mTLS through ``client_cert``/``client_key``, and
``verify: false`` (loudly logged) -- through a real ``fastgw serve``."""

from __future__ import annotations

import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from gateway import GatewayProcess
from rawhttp import post
from upstream_server import UPSTREAM_JSON, UpstreamServer, json_reply, sse_events, sse_reply

from fastgw.config import ConfigError, parse_config


def serving(ca: trustme.CA, *hosts: str, client_ca: trustme.CA | None = None) -> UpstreamServer:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*hosts).configure_cert(ctx)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        client_ca.configure_trust(ctx)
    server = UpstreamServer(ssl_context=ctx)

    def handler(r):
        return sse_reply(sse_events(5)) if b'"stream":true' in r.body.replace(b" ", b"") else json_reply(UPSTREAM_JSON)

    server.handler = handler
    return server


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> Iterator[dict[str, object]]:
    d: Path = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    client = ca.issue_cert("fastgw-client@example.test")
    client.cert_chain_pems[0].write_to_path(str(d / "client.pem"))
    client.private_key_pem.write_to_path(str(d / "client.key"))
    servers = {
        "good": serving(ca, "127.0.0.1"),
        "wrong_host": serving(ca, "upstream.example.test"),
        "mtls": serving(ca, "127.0.0.1", client_ca=ca),
    }
    yield {"dir": d, "servers": servers}
    for server in servers.values():
        server.close()


def provider(name: str, url: str, extra: str = "") -> str:
    return f"""
  - name: {name}
    type: openai
    base_url: {url}/v1
    api_key: sk-{name}-secret
    models: [m-{name}]
    timeouts: {{connect: 3}}{extra}"""


@pytest.fixture(scope="module")
def gw(tls) -> Iterator[GatewayProcess]:
    d, s = tls["dir"], tls["servers"]
    ca = f"\n    ca_bundle: {d}/ca.pem"
    config = "providers:" + "".join([
        provider("trusted", s["good"].url, ca),
        provider("untrusted", s["good"].url),
        provider("wronghost", s["wrong_host"].url, ca),
        provider("insecure", s["wrong_host"].url, "\n    verify: false"),
        provider("mtls", s["mtls"].url, ca + f"\n    client_cert: {d}/client.pem\n    client_key: {d}/client.key"),
        provider("nocert", s["mtls"].url, ca),
    ])
    g = GatewayProcess(config)
    yield g
    g.stop()


def chat(gw: GatewayProcess, model: str, stream: bool = False):
    return post(gw.url, "/v1/chat/completions", {"model": model, "messages": [], "stream": stream})


def test_https_exchange_with_a_private_ca_streams_and_reuses_the_connection(gw, tls):
    server = tls["servers"]["good"]
    before = server.connections_accepted
    for _ in range(3):
        resp = chat(gw, "m-trusted")
        assert resp.status == 200 and resp.body == UPSTREAM_JSON
        resp = chat(gw, "m-trusted", stream=True)
        assert resp.status == 200 and resp.body == sse_events(5)
    # Six sequential requests, one TLS connection: keep-alive reuse over TLS.
    assert server.connections_accepted - before == 1
    assert server.requests[-1].headers["authorization"] == "Bearer sk-trusted-secret"


def test_untrusted_certificate_is_refused(gw):
    resp = chat(gw, "m-untrusted")
    assert resp.status == 502
    error = resp.error()
    assert "certificate" in error["message"].lower() or "tls" in error["message"].lower(), error
    assert "sk-untrusted-secret" not in resp.body.decode()


def test_wrong_host_name_is_refused(gw):
    resp = chat(gw, "m-wronghost")
    assert resp.status == 502
    assert "certificate" in resp.error()["message"].lower() or "tls" in resp.error()["message"].lower()


def test_verify_false_connects_anyway_and_is_logged_loudly(gw):
    resp = chat(gw, "m-insecure")
    assert resp.status == 200 and resp.body == UPSTREAM_JSON
    logs = gw.logs()
    assert "provider insecure: TLS certificate verification is OFF (verify: false)" in logs
    # At start-up (before the workers), and as a WARNING in each worker's log.
    assert logs.startswith("provider insecure: TLS certificate verification is OFF") or \
        "\nprovider insecure: TLS certificate verification is OFF" in logs
    assert "WARNING fastgw.providers: provider insecure: TLS certificate verification is OFF" in logs


def test_mtls_required_by_the_upstream(gw, tls):
    resp = chat(gw, "m-mtls")
    assert resp.status == 200 and resp.body == UPSTREAM_JSON
    resp = chat(gw, "m-mtls", stream=True)
    assert resp.status == 200 and resp.body == sse_events(5)
    # Without the client certificate the upstream refuses the handshake.
    resp = chat(gw, "m-nocert")
    assert resp.status == 502, resp.body
    resp.error()


def test_tls_settings_are_checked_at_load(tmp_path):
    base = "providers:\n  - {name: p, type: openai, base_url: 'https://127.0.0.1:1/v1', models: [m], "
    with pytest.raises(ConfigError, match=r"providers\[0\].ca_bundle: no such file"):
        parse_config(base + f"ca_bundle: {tmp_path}/missing.pem}}")
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match=r"providers\[0\].client_key: needs client_cert"):
        parse_config(base + f"client_key: {cert}}}")
    config = parse_config(base + "verify: false}")
    assert config.providers[0].verify is False
    # A file that is not PEM: a clear start-up error, not a traceback.
    path = tmp_path / "bad.yaml"
    path.write_text(base + f"ca_bundle: {cert}}}")
    out = subprocess.run([sys.executable, "-m", "fastgw", "check-config", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "cannot load its TLS files" in out.stderr, out.stderr
