"""Token usage of one exchange: the one shape every wire format's usage is normalised to.

Counts follow OpenAI's meaning: ``prompt_tokens`` includes cached and cache-written
prompt tokens, ``completion_tokens`` includes reasoning tokens, and
``total_tokens`` is whatever the source reported as the total (normalisers that
compute it use ``prompt_tokens + completion_tokens``). Pure data, no I/O.
"""

from __future__ import annotations

import msgspec

__all__ = ["Usage"]


class Usage(msgspec.Struct):
    """Token counts of one exchange (positional order is part of the interface)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0
