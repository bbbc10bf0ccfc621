"""Per-request cost from a per-model price table.

The table ships as ``fastgw/data/pricing.json`` (USD per million tokens: ``input``,
``output``, optional ``cached_input`` and ``cache_write_input``; see its ``_meta`` for
source and date). Config
overrides are merged on top, per model (a whole entry replaces the shipped one; an entry
may give only some fields, the rest come from the shipped entry of the same name).

Lookup of ``(model, provider_type)``, first hit wins, each step memoised:

1. ``"<provider_type>/<model>"`` exactly (lets config price a model per provider),
2. ``model`` exactly,
3. ``model`` without a date/version suffix (``gpt-4o-2024-08-06`` -> ``gpt-4o``,
   ``claude-sonnet-4-5-20250929`` -> ``claude-sonnet-4-5``, ``mistral-large-2411``,
   ``gemini-2.0-flash-001``),
4. steps 2-3 again with a provider prefix removed (``openai/gpt-4o``, ``models/gemini-2.5-pro``).

Unknown models cost ``None`` (unknown), never 0.

Token semantics are OpenAI's: ``prompt_tokens`` includes ``cached_tokens`` (cache reads)
and cache writes (Anthropic's ``cache_creation_input_tokens``), so cost =
``(prompt - cached - written) * input + cached * cached_input + written *
cache_write_input + completion * output`` / 1e6 (``cached_input`` and
``cache_write_input`` default to ``input``).
Reasoning tokens are part of ``completion_tokens``.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import msgspec


class Price(msgspec.Struct, frozen=True):
    input: float
    output: float
    cached_input: float | None = None
    cache_write_input: float | None = None


class _File(msgspec.Struct):
    models: dict[str, Price]  # "_meta" is documentation only and skipped


_DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|\d{3}|v\d+(:\d+)?)$")
_MISSING = object()


def strip_date_suffix(model: str) -> str:
    return _DATE_SUFFIX.sub("", model)


class Pricing:
    def __init__(self, table: dict[str, Price]) -> None:
        self.table = table
        self._memo: dict[tuple[str, str | None], Price | None] = {}

    @classmethod
    def load(cls, overrides: dict[str, Any] | None = None, *, path: str | None = None) -> Pricing:
        """Load the shipped table (or ``path``) and merge ``overrides``.

        ``overrides`` maps model name -> ``{"input": .., "output": .., "cached_input": ..}``
        (a ``Price`` is accepted too). Raises ValueError on a malformed override.
        """
        if path is None:
            raw = resources.files("fastgw").joinpath("data/pricing.json").read_bytes()
        else:
            with open(path, "rb") as f:
                raw = f.read()
        table = dict(msgspec.json.decode(raw, type=_File).models)
        for name, val in (overrides or {}).items():
            if isinstance(val, Price):
                table[name] = val
                continue
            if not isinstance(val, dict):
                raise ValueError(f"pricing override for {name!r} must be a mapping")
            base = table.get(name)
            merged: dict[str, Any] = msgspec.structs.asdict(base) if base else {}
            merged.update(val)
            try:
                table[name] = msgspec.convert(merged, Price)
            except msgspec.ValidationError as e:
                raise ValueError(f"pricing override for {name!r}: {e}") from None
        return cls(table)

    def lookup(self, model: str, provider_type: str | None = None) -> Price | None:
        key = (model, provider_type)
        hit = self._memo.get(key, _MISSING)
        if hit is not _MISSING:
            return hit  # type: ignore[return-value]
        price = self._find(model, provider_type)
        if len(self._memo) > 4096:
            self._memo.clear()
        self._memo[key] = price
        return price

    def _find(self, model: str, provider_type: str | None) -> Price | None:
        t = self.table
        if provider_type:
            p = t.get(f"{provider_type}/{model}")
            if p is not None:
                return p
        candidates = [model]
        if "/" in model:
            candidates.append(model.split("/", 1)[1])
        for m in candidates:
            p = t.get(m)
            if p is None:
                p = t.get(strip_date_suffix(m))
            if p is not None:
                return p
        return None

    def cost(
        self,
        model: str,
        provider_type: str | None,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        cached_tokens: int | None = 0,
        cache_write_tokens: int | None = 0,
    ) -> float | None:
        """USD for one request, or None when the model is unknown or no usage is known."""
        price = self.lookup(model, provider_type)
        if price is None or (prompt_tokens is None and completion_tokens is None):
            return None
        prompt = prompt_tokens or 0
        cached = min(cached_tokens or 0, prompt)
        written = min(cache_write_tokens or 0, prompt - cached)
        cached_price = price.input if price.cached_input is None else price.cached_input
        write_price = price.input if price.cache_write_input is None else price.cache_write_input
        return (
            (prompt - cached - written) * price.input + cached * cached_price + written * write_price
            + (completion_tokens or 0) * price.output
        ) / 1_000_000
