from __future__ import annotations

import json
from importlib import resources

import pytest

from fastgw.controls.pricing import Price, Pricing, strip_date_suffix


def test_shipped_table_is_sane() -> None:
    raw = json.loads(resources.files("fastgw").joinpath("data/pricing.json").read_text())
    assert raw["_meta"]["source"] and raw["_meta"]["updated"]
    p = Pricing.load()
    for name in (
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "o3",
        "o4-mini",
        "gpt-5",
        "claude-sonnet-4-5",
        "gemini-2.5-pro",
        "gemini-2.0-flash",
        "llama-3.3-70b-versatile",
        "mistral-large-latest",
        "deepseek-chat",
    ):
        price = p.lookup(name)
        assert price is not None, name
        assert price.input >= 0 and price.output >= 0
        assert price.cached_input is None or price.cached_input <= price.input


def test_lookup_order() -> None:
    p = Pricing.load()
    assert p.lookup("gpt-4o-2024-08-06") == p.lookup("gpt-4o")
    assert p.lookup("claude-sonnet-4-5-20250929") == p.lookup("claude-sonnet-4-5")
    assert p.lookup("openai/gpt-4o-mini") == p.lookup("gpt-4o-mini")
    assert p.lookup("models/gemini-2.0-flash-001") == p.lookup("gemini-2.0-flash")
    assert p.lookup("no-such-model") is None
    assert strip_date_suffix("mistral-large-2411") == "mistral-large"
    # provider-qualified entries win for that provider only
    q = Pricing.load({"groq/gpt-4o": {"input": 1, "output": 1}})
    assert q.lookup("gpt-4o", "groq") == Price(1, 1)
    assert q.lookup("gpt-4o", "openai") == p.lookup("gpt-4o")


def test_cost() -> None:
    p = Pricing.load()
    # gpt-4o: 2.5 in, 10 out, 1.25 cached (per million)
    assert p.cost("gpt-4o", None, 1_000_000, 0, 0) == pytest.approx(2.5)
    assert p.cost("gpt-4o", "openai", 1000, 500, 400) == pytest.approx(
        (600 * 2.5 + 400 * 1.25 + 500 * 10) / 1e6
    )
    assert p.cost("unknown-model", None, 10, 10, 0) is None  # unknown is null, not 0
    assert p.cost("gpt-4o", None, None, None) is None
    assert p.cost("gpt-4o", None, 0, 0, 0) == 0.0
    # cached price defaults to the input price
    q = Pricing.load({"m": {"input": 2, "output": 4}})
    assert q.cost("m", None, 100, 0, 100) == pytest.approx(200 / 1e6)


def test_overrides() -> None:
    p = Pricing.load({"gpt-4o": {"output": 12.0}, "custom": Price(0.5, 1.0, 0.1)})
    assert p.lookup("gpt-4o") == Price(2.5, 12.0, 1.25)  # partial override merges
    assert p.lookup("custom") == Price(0.5, 1.0, 0.1)
    with pytest.raises(ValueError):
        Pricing.load({"x": {"input": "cheap"}})
    with pytest.raises(ValueError):
        Pricing.load({"x": 3})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        Pricing.load({"brand-new": {"input": 1}})  # output missing, nothing to merge with
