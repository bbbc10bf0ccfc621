"""The routes config: values a type cannot express are refused with their path, ``fastgw
check-config`` prints each resolved route, and rotated keys only masked."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fastgw.config import ConfigError, parse_config

PROVIDERS = """
providers:
  - {name: a, type: openai, base_url: "http://127.0.0.1:9/v1", api_keys: [sk-first-key-000001, sk-second-key-00002], models: [m]}
  - {name: c, type: anthropic, api_key: k-anthropic-0000001, models: [claude-x]}
"""


@pytest.mark.parametrize(("route", "message"), [
    ("{targets: []}", "routes.r.targets: expected at least one target"),
    ("{targets: [a/m], retry: {attempts: -1}}", "routes.r.retry.attempts: expected a number >= 0"),
    ("{targets: [a/m], retry: {on_status: [200]}}", "routes.r.retry.on_status[0]: expected an HTTP error status"),
    ("{targets: [a/m], fallback_on: [{status: 302}]}", "routes.r.fallback_on[0]: expected an HTTP error status"),
    ("{targets: [a/m], deadline_s: 0}", "routes.r.deadline_s: expected a number > 0"),
    ("{targets: [a/m], strategy: random}", "routes.r.strategy: invalid enum value 'random'"),
    ("[a/m]", "routes.r: expected object, got array"),
    ("{targets: [{model: a/m, weight: 0}], strategy: weighted}", "routes.r.targets: a weighted route needs"),
    ("{targets: [a/m], breaker: {cooldown_s: 0}}", "routes.r.breaker: window_s, cooldown_s > 0"),
    ("{targets: [a/m], retries: 3}", "routes.r.retries: unknown key"),
])
def test_bad_route_values_name_their_path(route, message):
    with pytest.raises(ConfigError) as info:
        parse_config(PROVIDERS + f"routes:\n  r: {route}\n")
    assert message in str(info.value)


def test_a_provider_takes_api_key_or_api_keys_not_both():
    with pytest.raises(ConfigError, match=r"providers\[0\].api_keys: give api_key or api_keys"):
        parse_config('providers:\n  - {name: a, type: openai, api_key: x, api_keys: [y, z]}\n')


def check_config(tmp_path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return subprocess.run([sys.executable, "-m", "fastgw", "check-config", str(path)], capture_output=True,
                          text=True, timeout=60)


def test_check_config_prints_resolved_routes_and_masked_rotated_keys(tmp_path):
    out = check_config(tmp_path, PROVIDERS + """aliases:
  pair: [a/m, c/claude-x]
routes:
  smart:
    targets: [{model: a/m, weight: 3}, {model: c/claude-x, priority: 1}]
    strategy: weighted
    sticky: {header: x-session-id}
""")
    assert out.returncode == 0, out.stderr
    assert "smart: weighted over a/m (weight 3), c/claude-x (weight 1) [priority 1]" in out.stdout
    assert "sticky on x-session-id" in out.stdout and "deadline 60 s" in out.stdout
    assert "pair: ordered over a/m, c/claude-x" in out.stdout
    assert "sk-f…01, sk-s…02" in out.stdout
    assert "sk-first-key-000001" not in out.stdout


def test_check_config_refuses_a_route_target_that_does_not_resolve(tmp_path):
    out = check_config(tmp_path, PROVIDERS + "routes:\n  r: {targets: [a/m, nobody/x]}\n")
    assert out.returncode == 2
    assert "routes.r.targets[1]:" in out.stderr and "Traceback" not in out.stderr
