"""Pure format translation between OpenAI and other providers (no I/O, no asyncio).

Modules, one concept each:

* :mod:`~fastgw.translate.sse` -- incremental SSE parser and encoders (``DONE``).
* :mod:`~fastgw.translate.errors` -- :class:`TranslationError`, provider error bodies, ``scrub``.
* :mod:`~fastgw.translate.chunks` -- OpenAI ``chat.completion(.chunk)`` and usage builders.
* :mod:`~fastgw.translate.common` -- reading an OpenAI chat request (shared by the request builders).
* :mod:`~fastgw.translate.stream_base` -- the feed/close loop of every stream translator.
* :mod:`~fastgw.translate.anthropic` (+ ``anthropic_request``) -- Anthropic Messages.
* :mod:`~fastgw.translate.gemini` (+ ``gemini_request``, ``jsonarray``) -- Google Gemini API.
* :mod:`~fastgw.translate.responses` (+ ``responses_stream``) -- the Responses API over chat.

The provider modules share one interface: ``build_request``, ``translate_response``,
``StreamTranslator(model=..., include_usage=...)`` with ``feed`` / ``close`` /
``finished`` / ``complete`` / ``error`` / ``usage``, ``translate_error``, and
``usage_of`` / ``response_usage`` (the provider's usage as :class:`fastgw.tokens.Usage`).
"""


from .errors import TranslationError

__all__ = ["TranslationError"]
