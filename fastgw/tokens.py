"""Token usage of one exchange: the one shape every wire format's usage is normalised to;
and a request's output caps, which bound the tokens it may use.

Counts follow OpenAI's meaning: ``prompt_tokens`` includes cached and cache-written
prompt tokens, ``completion_tokens`` includes reasoning tokens, and
``total_tokens`` is whatever the source reported as the total (normalisers that
compute it use ``prompt_tokens + completion_tokens``). Pure data, no I/O.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["OutputCaps", "Usage"]


class OutputCaps(msgspec.Struct):
    """A request body's output caps as sent (any JSON value; a positive integer is a cap):
    Chat Completions' ``max_tokens`` and ``max_completion_tokens``, Responses'
    ``max_output_tokens``. Decoded alone, msgspec skips every other member."""

    max_tokens: Any = None
    max_completion_tokens: Any = None
    max_output_tokens: Any = None


class Usage(msgspec.Struct):
    """Token counts of one exchange (positional order is part of the interface)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0
