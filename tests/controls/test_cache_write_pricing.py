"""Cache writes (Anthropic's ``cache_creation_input_tokens``) are counted and priced at their own
rate (``cache_write_input``, shipped for Anthropic models at 1.25x input; config may override)."""

from __future__ import annotations

import pytest

from fastgw.controls.pricing import Pricing
from fastgw.controls.usage import usage_from_json_body


def test_anthropic_body_usage_keeps_cache_writes():
    body = (b'{"usage":{"input_tokens":100,"cache_creation_input_tokens":1000,'
            b'"cache_read_input_tokens":2000,"output_tokens":10}}')
    u = usage_from_json_body(body)
    assert u is not None
    assert (u.prompt_tokens, u.cached_tokens, u.cache_write_tokens, u.completion_tokens) == (3100, 2000, 1000, 10)


def test_cache_writes_priced_at_their_rate():
    shipped = Pricing.load()
    price = shipped.lookup("claude-haiku-4-5", "anthropic")
    assert price is not None and price.cache_write_input == pytest.approx(1.25)
    cost = shipped.cost("claude-haiku-4-5", "anthropic", 3100, 10, 2000, 1000)
    assert cost == pytest.approx((100 * 1.0 + 2000 * 0.1 + 1000 * 1.25 + 10 * 5.0) / 1e6)
    # Without writes, the same as before; a model without a write price charges writes as input.
    assert shipped.cost("claude-haiku-4-5", None, 3100, 10, 2000) == pytest.approx(
        (1100 * 1.0 + 2000 * 0.1 + 10 * 5.0) / 1e6)
    custom = Pricing.load({"my-model": {"input": 2.0, "output": 4.0}})
    assert custom.cost("my-model", None, 1000, 0, 0, 500) == pytest.approx(1000 * 2.0 / 1e6)
    over = Pricing.load({"claude-haiku-4-5": {"input": 1.0, "output": 5.0, "cache_write_input": 2.0}})
    assert over.cost("claude-haiku-4-5", None, 1000, 0, 0, 1000) == pytest.approx(2000 / 1e6)
