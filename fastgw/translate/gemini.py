"""Google Gemini API (generateContent / streamGenerateContent / batchEmbedContents) <-> OpenAI.

Public API (the gateway core relies on these names):

* :func:`build_request`, :func:`build_embeddings_request` -- documented in
  :mod:`fastgw.translate.gemini_request`.
* :func:`translate_response` -- ``GenerateContentResponse`` JSON -> ``chat.completion``.
* :class:`StreamTranslator` -- ``streamGenerateContent`` bytes -> chunk SSE.  SSE
  (``?alt=sse``, ``\\r\\n\\r\\n`` framing) by default; pass ``framing="json-array"``
  for the plain JSON-array stream Gemini sends without ``alt=sse``.
* :func:`translate_error` -- Gemini error body -> (client status, OpenAI envelope).
* :func:`translate_embeddings_response` -- ``batchEmbedContents`` -> OpenAI list.

Response mapping:

* Each candidate is a choice (``index`` from the candidate; ``n`` maps to
  ``candidateCount``).  Text parts -> ``content``; parts with ``thought: true`` ->
  ``reasoning_content``; ``functionCall`` parts -> ``tool_calls`` with
  ``functionCall.id`` as id when Gemini sends one, else a fresh ``call_<hex>``, and
  the ``args`` JSON-encoded.  When the part carries a ``thoughtSignature`` (Gemini
  3), the id becomes ``<id>__ts__<signature>`` so the signature travels with the
  OpenAI client's history and :func:`build_request` can send it back, as Gemini
  requires for multi-turn function calling.
* ``finishReason``: ``STOP`` -> ``stop``, or ``tool_calls`` when the candidate holds
  function calls; ``MAX_TOKENS`` -> ``length``; ``SAFETY``, ``RECITATION``,
  ``PROHIBITED_CONTENT``, ``BLOCKLIST``, ``SPII``, ``LANGUAGE`` and the ``IMAGE_*``
  filters -> ``content_filter``; others -> ``stop``.  A prompt blocked via
  ``promptFeedback.blockReason`` (no candidates) -> one choice with empty content
  and ``content_filter``.
* ``logprobsResult`` (non-streaming) -> ``choices[].logprobs.content``.
* Usage: ``prompt_tokens = promptTokenCount + toolUsePromptTokenCount``,
  ``completion_tokens = candidatesTokenCount + thoughtsTokenCount``,
  ``reasoning_tokens = thoughtsTokenCount``, ``cached_tokens =
  cachedContentTokenCount``.  Streams carry cumulative ``usageMetadata`` on every
  chunk; the last one wins.

Stream contract: like :class:`fastgw.translate.anthropic.StreamTranslator` --
role chunk per choice first; deltas as soon as each upstream chunk is complete; a
whole ``functionCall`` -> one tool-call start chunk with the full arguments JSON;
Vertex's streamed ``partialArgs`` -> a start chunk when the name arrives and one
arguments chunk with the assembled JSON when the call's empty terminator arrives;
a finish chunk per choice when its ``finishReason`` arrives.  Gemini has no
end-of-stream event, so the usage chunk (``include_usage``) and ``[DONE]`` are sent
by ``close()``; ``complete`` tells whether every choice had a ``finishReason``.  An
``{"error": ...}`` payload mid-stream -> one ``data: {"error": {...}}`` event and
the translator is ``finished`` (no ``[DONE]``).
"""

from __future__ import annotations

import base64
import sys
from array import array
from itertools import pairwise
from typing import Any

import msgspec

from fastgw.tokens import Usage

from .chunks import completion, completion_id, message, new_call_id, tool_call
from .errors import TranslationError, error_reply, provider_error
from .gemini_request import SIGNATURE_SEP, build_embeddings_request, build_request
from .jsonarray import JSONArrayParser
from .sse import SSEParser
from .stream_base import ChatStream, sse_events

__all__ = [
    "StreamTranslator",
    "TranslationError",
    "build_embeddings_request",
    "build_request",
    "response_usage",
    "translate_embeddings_response",
    "translate_error",
    "translate_response",
    "usage_of",
]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "BLOCKLIST": "content_filter",
    "SPII": "content_filter",
    "LANGUAGE": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
}

# google.rpc status -> (client status, OpenAI error type)
_STATUSES: dict[str, tuple[int, str]] = {
    "INVALID_ARGUMENT": (400, "invalid_request_error"),
    "FAILED_PRECONDITION": (400, "invalid_request_error"),
    "OUT_OF_RANGE": (400, "invalid_request_error"),
    "UNAUTHENTICATED": (401, "authentication_error"),
    "PERMISSION_DENIED": (403, "permission_error"),
    "NOT_FOUND": (404, "not_found_error"),
    "ALREADY_EXISTS": (409, "invalid_request_error"),
    "ABORTED": (409, "server_error"),
    "RESOURCE_EXHAUSTED": (429, "rate_limit_error"),
    "CANCELLED": (499, "server_error"),
    "INTERNAL": (500, "server_error"),
    "UNKNOWN": (500, "server_error"),
    "DATA_LOSS": (500, "server_error"),
    "UNIMPLEMENTED": (501, "server_error"),
    "UNAVAILABLE": (503, "service_unavailable"),
    "DEADLINE_EXCEEDED": (504, "timeout"),
}
_HTTP_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def finish_reason(reason: str | None, has_calls: bool) -> str:
    """Gemini ``finishReason`` -> OpenAI ``finish_reason``."""
    mapped = _FINISH.get(reason or "", "stop")
    return "tool_calls" if mapped == "stop" and has_calls else mapped


def usage_of(meta: dict[str, Any] | None, into: Usage | None = None) -> Usage:
    """``usageMetadata`` -> :class:`Usage` (absent counts are 0)."""
    usage = into if into is not None else Usage()
    if not meta:
        return usage
    thoughts = int(meta.get("thoughtsTokenCount") or 0)
    usage.prompt_tokens = int(meta.get("promptTokenCount") or 0) + int(
        meta.get("toolUsePromptTokenCount") or 0
    )
    usage.completion_tokens = int(meta.get("candidatesTokenCount") or 0) + thoughts
    usage.reasoning_tokens = thoughts
    usage.cached_tokens = int(meta.get("cachedContentTokenCount") or 0)
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
    return usage


class _UsageOnly(msgspec.Struct):
    usageMetadata: dict[str, Any] | None = None  # Gemini's field name


_decode_usage_only = msgspec.json.Decoder(_UsageOnly).decode


def response_usage(data: bytes) -> Usage:
    """The :class:`Usage` of a ``GenerateContentResponse`` or ``batchEmbedContents``
    JSON body (zeros when it has no ``usageMetadata``)."""
    return usage_of(_decode_usage_only(data).usageMetadata)


def _call_id(part: dict[str, Any], fc: dict[str, Any]) -> str:
    call_id = fc.get("id") or new_call_id()
    signature = part.get("thoughtSignature")
    return f"{call_id}{SIGNATURE_SEP}{signature}" if signature else str(call_id)


def _token_logprob(c: dict[str, Any]) -> dict[str, Any]:
    token = str(c.get("token") or "")
    return {"token": token, "logprob": float(c.get("logProbability") or 0.0), "bytes": list(token.encode())}


def _logprobs(result: Any) -> dict[str, Any] | None:
    if not isinstance(result, dict):
        return None
    tops = result.get("topCandidates") or []
    content = []
    for i, chosen in enumerate(result.get("chosenCandidates") or ()):
        entry = _token_logprob(chosen)
        top = tops[i].get("candidates") if i < len(tops) and isinstance(tops[i], dict) else None
        entry["top_logprobs"] = [_token_logprob(t) for t in top or ()]
        content.append(entry)
    return {"content": content, "refusal": None}


def translate_response(data: bytes, *, model: str) -> bytes:
    """A ``GenerateContentResponse`` JSON body -> OpenAI ``chat.completion`` bytes."""
    body = _decode(data)
    if isinstance(body, list) and body and isinstance(body[0], dict):  # a collected JSON-array stream
        body = body[0]
    if not isinstance(body, dict):
        raise ValueError("Gemini response body is not a JSON object")
    choices = []
    for pos, cand in enumerate(body.get("candidates") or ()):
        texts: list[str] = []
        thoughts: list[str] = []
        calls: list[dict[str, Any]] = []
        for part in (cand.get("content") or {}).get("parts") or ():
            if "functionCall" in part:
                fc = part["functionCall"] or {}
                calls.append(
                    tool_call(
                        _call_id(part, fc), str(fc.get("name") or ""), _encode(fc.get("args") or {}).decode()
                    )
                )
            elif "text" in part:
                (thoughts if part.get("thought") else texts).append(part.get("text") or "")
        text = "".join(texts)
        choices.append(
            {
                "index": int(cand.get("index", pos) or 0),
                "message": message(
                    None if calls and not text else text,
                    tool_calls=calls,
                    reasoning="".join(thoughts) or None,
                ),
                "logprobs": _logprobs(cand.get("logprobsResult")),
                "finish_reason": finish_reason(cand.get("finishReason"), bool(calls)),
            }
        )
    if not choices:
        blocked = bool((body.get("promptFeedback") or {}).get("blockReason"))
        choices.append(
            {
                "index": 0,
                "message": message(""),
                "logprobs": None,
                "finish_reason": "content_filter" if blocked else "stop",
            }
        )
    return completion(
        id=completion_id(body.get("responseId")),
        model=model,
        choices=choices,
        usage=usage_of(body.get("usageMetadata")),
    )


def _error_from(status: int, payload: Any) -> tuple[int, dict[str, Any]]:
    """A Gemini error body (decoded, or None) -> (client status, OpenAI error object)."""
    if isinstance(payload, list) and payload:
        payload = payload[0]
    err = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(err, dict):
        err = {}
    rpc = err.get("status") if isinstance(err.get("status"), str) else None
    if rpc in _STATUSES:
        client_status, openai_type = _STATUSES[rpc]
    elif status in _HTTP_TYPES:
        client_status, openai_type = status, _HTTP_TYPES[status]
    else:
        client_status, openai_type = status, "server_error" if status >= 500 else "invalid_request_error"
    for detail in err.get("details") or ():
        if isinstance(detail, dict) and detail.get("reason") in ("API_KEY_INVALID", "API_KEY_EXPIRED"):
            client_status, openai_type = 401, "authentication_error"
    text = err.get("message")
    if not isinstance(text, str) or not text:
        text = f"Upstream provider returned HTTP {status}."
    return client_status, provider_error(text, openai_type, rpc)


def translate_error(status: int, data: bytes) -> tuple[int, bytes]:
    """Gemini error body (any bytes) -> (status for the client, OpenAI error envelope).

    ``RESOURCE_EXHAUSTED`` -> 429, ``INVALID_ARGUMENT`` -> 400 (401 when the detail
    reason is an invalid API key), ``UNAUTHENTICATED`` -> 401, ``PERMISSION_DENIED``
    -> 403, ``NOT_FOUND`` -> 404, ``UNAVAILABLE`` -> 503, ``DEADLINE_EXCEEDED`` ->
    504, ``INTERNAL`` -> 500.  ``code`` is the google.rpc status name.
    """
    return error_reply(status, data, _error_from)


def translate_embeddings_response(data: bytes, *, model: str, encoding_format: str = "float") -> bytes:
    """``batchEmbedContents`` JSON -> OpenAI embeddings list.

    ``encoding_format="base64"`` encodes each vector as little-endian float32 bytes
    in base64, as OpenAI does.  Gemini reports no token counts for embeddings, so
    ``usage`` is zero unless the body has ``usageMetadata.promptTokenCount``.
    """
    body = _decode(data)
    data_out = []
    for i, emb in enumerate((body.get("embeddings") if isinstance(body, dict) else None) or ()):
        values = emb.get("values") or []
        vector: Any = values
        if encoding_format == "base64":
            arr = array("f", values)
            if sys.byteorder != "little":
                arr.byteswap()
            vector = base64.b64encode(arr.tobytes()).decode()
        data_out.append({"object": "embedding", "index": i, "embedding": vector})
    tokens = int(
        ((body.get("usageMetadata") or {}).get("promptTokenCount") or 0) if isinstance(body, dict) else 0
    )
    return _encode(
        {
            "object": "list",
            "data": data_out,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


class _Choice:
    __slots__ = ("calls", "finished", "partial", "reason")

    def __init__(self) -> None:
        self.calls = 0  # function calls seen
        self.finished = False
        self.reason: str | None = None
        self.partial: tuple[int, dict[str, Any]] | None = None  # (tool index, args) of a streamed call


def _set_path(args: dict[str, Any], path: str, value: Any, append: bool) -> None:
    """Assign ``value`` at a ``$.a.b`` / ``$.a[0]`` json path inside ``args``."""
    keys: list[str | int] = []
    for piece in path.lstrip("$").replace("[", ".[").split("."):
        if piece:
            keys.append(int(piece[1:-1]) if piece.startswith("[") and piece[1:-1].isdigit() else piece)
    if not keys:
        return
    node: Any = args
    for key, nxt in pairwise(keys):
        empty: Any = [] if isinstance(nxt, int) else {}
        if isinstance(node, list) and isinstance(key, int):
            while len(node) <= key:
                node.append(None)
            if node[key] is None:
                node[key] = empty
            node = node[key]
        elif isinstance(node, dict):
            node = node.setdefault(key, empty)
    last = keys[-1]
    if isinstance(node, list) and isinstance(last, int):
        while len(node) <= last:
            node.append(None)
        node[last] = node[last] + value if append and isinstance(node[last], str) else value
    elif isinstance(node, dict):
        prev = node.get(last)
        node[last] = prev + value if append and isinstance(prev, str) and isinstance(value, str) else value


def _partial_value(pa: dict[str, Any]) -> Any:
    for key in ("stringValue", "numberValue", "boolValue"):
        if key in pa:
            return pa[key]
    return None


class StreamTranslator(ChatStream[str | bytes]):
    """Gemini stream -> OpenAI chat chunk SSE; see the module docstring."""

    def __init__(self, *, model: str, include_usage: bool, framing: str = "sse") -> None:
        if framing not in ("sse", "json-array"):
            raise ValueError("framing must be 'sse' or 'json-array'")
        super().__init__(model=model, include_usage=include_usage)
        self._sse = SSEParser() if framing == "sse" else None
        self._array = JSONArrayParser() if framing == "json-array" else None
        self._choices: dict[int, _Choice] = {}
        self._tools = 0
        self._blocked = False

    @property
    def finish_reason(self) -> str | None:
        """The finish reason sent for choice 0 (``None`` until sent)."""
        choice = self._choices.get(0)
        return choice.reason if choice else None

    def _payloads(self, data: bytes, closing: bool) -> list[str | bytes]:
        if self._sse is not None:
            events = sse_events(self._sse, data, closing)
            return [e.data for e in events if e.data.strip() and e.data.strip() != "[DONE]"]
        assert self._array is not None
        return list(self._array.close() if closing else self._array.feed(data))

    def _end(self, out: list[bytes]) -> None:
        if not self._choices:
            self._choice(0, out)
        self.complete = self._blocked or all(c.finished for c in self._choices.values())
        for index, choice in sorted(self._choices.items()):
            if not choice.finished:
                choice.finished = True
                choice.reason = "tool_calls" if choice.calls else "stop"
                out.append(self._writer.finish(choice.reason, index))
        self._done(out)

    def _choice(self, index: int, out: list[bytes]) -> _Choice:
        choice = self._choices.get(index)
        if choice is None:
            choice = self._choices[index] = _Choice()
            out.append(self._writer.role(index))
        return choice

    def _error(self, err: Any) -> dict[str, Any]:
        return _error_from(500, {"error": err})[1]

    def _handle(self, payload: str | bytes, out: list[bytes]) -> None:
        try:
            body = _decode(payload)
        except msgspec.DecodeError:
            self._fail({"status": "INTERNAL", "message": "Malformed chunk from upstream provider."}, out)
            return
        if not isinstance(body, dict):
            return
        if "error" in body:
            self._fail(body.get("error"), out)
            return
        self._writer.set_id(body.get("responseId"))
        if body.get("usageMetadata"):
            usage_of(body["usageMetadata"], self.usage)
        candidates = body.get("candidates")
        if not candidates:
            if (body.get("promptFeedback") or {}).get("blockReason"):
                self._blocked = True
                choice = self._choice(0, out)
                if not choice.finished:
                    choice.finished = True
                    choice.reason = "content_filter"
                    out.append(self._writer.finish("content_filter", 0))
            return
        for pos, cand in enumerate(candidates):
            self._candidate(int(cand.get("index", pos) or 0), cand, out)

    def _candidate(self, index: int, cand: dict[str, Any], out: list[bytes]) -> None:
        choice = self._choice(index, out)
        w = self._writer
        for part in (cand.get("content") or {}).get("parts") or ():
            if "functionCall" in part:
                self._function_call(index, choice, part, out)
            elif part.get("text"):
                out.append(
                    w.reasoning(part["text"], index)
                    if part.get("thought")
                    else w.content(part["text"], index)
                )
        reason = cand.get("finishReason")
        if reason and not choice.finished:
            self._end_partial(index, choice, out)
            choice.finished = True
            choice.reason = finish_reason(reason, choice.calls > 0)
            out.append(w.finish(choice.reason, index))

    def _function_call(self, index: int, choice: _Choice, part: dict[str, Any], out: list[bytes]) -> None:
        fc = part.get("functionCall") or {}
        streamed = "partialArgs" in fc or "willContinue" in fc or not fc
        if not streamed:
            tc = self._new_call(index, choice, out)
            args = _encode(fc.get("args") or {}).decode()
            out.append(
                self._writer.tool_start(tc, _call_id(part, fc), str(fc.get("name") or ""), args, index)
            )
            return
        if fc.get("name"):
            tc = self._new_call(index, choice, out)
            choice.partial = (tc, dict(fc.get("args") or {}))
            out.append(self._writer.tool_start(tc, _call_id(part, fc), str(fc["name"]), "", index))
        if choice.partial is not None:
            args = choice.partial[1]
            for pa in fc.get("partialArgs") or ():
                if isinstance(pa, dict) and isinstance(pa.get("jsonPath"), str):
                    _set_path(args, pa["jsonPath"], _partial_value(pa), "stringValue" in pa)
            if not fc.get("name") and not fc.get("partialArgs") and not fc.get("willContinue"):
                self._end_partial(index, choice, out)

    def _new_call(self, index: int, choice: _Choice, out: list[bytes]) -> int:
        """Close a streamed call still open on ``choice``; the tool-call index of a new one."""
        self._end_partial(index, choice, out)
        choice.calls += 1
        tc = self._tools
        self._tools += 1
        return tc

    def _end_partial(self, index: int, choice: _Choice, out: list[bytes]) -> None:
        if choice.partial is not None:
            tc, args = choice.partial
            choice.partial = None
            out.append(self._writer.tool_args(tc, _encode(args).decode(), index))
