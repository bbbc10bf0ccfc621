"""Strict translation: a request a translated target could only serve by dropping fields is refused.

By default a translated target drops what only steers the original provider's own machinery
(``context_management``, ``cache_control``, ``prompt_cache_key``, hosted tools, ...) and names it
in ``x-fastgw-dropped-params``. With ``strict_translation: true`` (a provider's setting, else the
top-level default) nothing is dropped: the caller translates with every unsupported field
collected instead of raised one at a time, and :func:`refusal` turns the collected names into one
400 ``unsupported_parameter`` naming every one of them (``param`` holds the first).
"""

from __future__ import annotations

from .errors import TranslationError

__all__ = ["refusal"]


def refusal(dropped: list[str], backend: str) -> TranslationError | None:
    """The 400 for a strict request whose translation dropped ``dropped`` (None: nothing dropped)."""
    if not dropped:
        return None
    names = ", ".join(f"'{name}'" for name in dropped)
    return TranslationError(
        f"strict_translation is on: the {backend} backend of this model cannot honour {names}; "
        "the request was refused instead of sent without them.",
        param=dropped[0], code="unsupported_parameter")
