"""Config parsing: interpolation, path-naming errors, the minimal file, check-config."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fastgw.config import ConfigError, mask_secret, parse_config

MINIMAL = """
providers:
  - name: local
    type: openai
    base_url: http://127.0.0.1:9000/v1
    api_key: sk-test
    models: [gpt-4o-mini]
"""


def test_minimal_config_exactly_as_documented():
    config = parse_config(MINIMAL, env={})
    provider = config.providers[0]
    assert (provider.name, provider.type, provider.base_url, provider.api_key, provider.models) == (
        "local", "openai", "http://127.0.0.1:9000/v1", "sk-test", ["gpt-4o-mini"])
    assert provider.timeouts.connect == 10.0


def test_interpolation_with_defaults():
    text = MINIMAL.replace("sk-test", "${KEY}").replace("9000", "${PORT:-9001}") + "server:\n  port: ${GW_PORT}\n"
    config = parse_config(text, env={"KEY": "sk-from-env", "GW_PORT": "8123"})
    assert config.providers[0].api_key == "sk-from-env"
    assert config.providers[0].base_url == "http://127.0.0.1:9001/v1"
    assert config.server.port == 8123
    assert parse_config("master_key: $${LITERAL}\n", env={}).master_key == "${LITERAL}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (MINIMAL.replace("sk-test", "${MISSING}"), "providers[0].api_key: environment variable MISSING is not set"),
        (MINIMAL + "    colour: blue\n", "providers[0].colour: unknown key"),
        (MINIMAL + "extra_top: 1\n", "extra_top: unknown key"),
        (MINIMAL.replace("models: [gpt-4o-mini]", "models: 7"), "providers[0].models: expected array"),
        (MINIMAL.replace("type: openai", "type: nonsense"), "providers[0].type:"),
        (MINIMAL + MINIMAL.split("providers:\n")[1].replace("local", "b")
         + MINIMAL.split("providers:\n")[1].replace("local", "c").replace("http://127.0.0.1:9000/v1", "not a url"),
         "providers[2].base_url: expected a URL"),
        (MINIMAL + MINIMAL.split("providers:\n")[1], "providers[1].name: duplicate provider name"),
        ("providers: [\n", "invalid YAML"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("server: {port: 99999}\n", "server.port"),
        ("providers:\n  - {name: g, type: openai-compatible}\n", "providers[0].base_url: required"),
        (MINIMAL.replace("models: [gpt-4o-mini]", "models: [gpt-4o-mini]\n    timeouts: {idle: -1}"),
         "providers[0].timeouts.idle"),
    ],
)
def test_errors_name_the_path(text, message):
    with pytest.raises(ConfigError) as info:
        parse_config(text, env={})
    assert message in str(info.value)


def test_mask_secret():
    assert mask_secret("sk-proj-abcdefghijkl") == "sk-p…kl"
    assert mask_secret("short") == "***"
    assert mask_secret(None) == "(none)"


def test_check_config_cli_reports_errors_without_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(MINIMAL.replace("http://127.0.0.1:9000/v1", "ftp://x"))
    out = subprocess.run([sys.executable, "-m", "fastgw", "check-config", str(path)], capture_output=True, text=True)
    assert out.returncode == 2
    assert "providers[0].base_url: expected a URL" in out.stderr
    assert "Traceback" not in out.stderr


def test_check_config_cli_rejects_bad_alias(tmp_path):
    path = tmp_path / "alias.yaml"
    path.write_text(MINIMAL + "aliases:\n  fast: nowhere/model\n")
    out = subprocess.run([sys.executable, "-m", "fastgw", "check-config", str(path)], capture_output=True, text=True)
    assert out.returncode == 2
    assert "aliases.fast:" in out.stderr


def test_check_config_cli_prints_resolution(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(MINIMAL.replace("sk-test", "sk-test-1234567890") + "aliases:\n  fast: local/gpt-4o-mini\n")
    out = subprocess.run([sys.executable, "-m", "fastgw", "check-config", str(path)], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "local: type=openai base_url=http://127.0.0.1:9000/v1 api_key=sk-t…90" in out.stdout
    assert "models: gpt-4o-mini" in out.stdout
    assert "fast -> local/gpt-4o-mini" in out.stdout
    assert "sk-test-1234567890" not in out.stdout
    assert "mock: type=mock" in out.stdout
