"""OpenAI chat completion request -> Anthropic Messages request.

``build_request(body, upstream_model, *, default_max_tokens=None,
drop_unsupported=False) -> (path, headers, body_bytes)`` with path ``/v1/messages``
and headers ``content-type`` + ``anthropic-version: 2023-06-01`` (auth is the
caller's business).

Mapping:

* ``system`` / ``developer`` messages, wherever they appear, become the top-level
  ``system`` list of text blocks, in order.
* ``user`` content: text parts -> ``text`` blocks; ``image_url`` data URLs ->
  ``{"type":"image","source":{"type":"base64",...}}``, http(s) URLs ->
  ``{"source":{"type":"url","url":...}}``; ``file`` parts with ``file_data`` (a PDF
  data URL or bare base64) -> ``document`` blocks.  A ``cache_control`` key on a
  part is passed through (Anthropic prompt caching).
* ``assistant``: text -> ``text`` blocks (empty text dropped; a message left empty
  is dropped); ``tool_calls`` -> ``tool_use`` blocks (arguments JSON decoded);
  ``thinking_blocks`` (as produced by :func:`fastgw.translate.anthropic.translate_response`)
  are sent back first so extended thinking can continue across tool use.
* ``tool`` messages -> ``tool_result`` blocks; consecutive ones share one ``user`` turn.
* ``tools`` -> ``{name, description, input_schema}`` (``strict`` passed through);
  ``tool_choice`` auto/none/required/named -> ``auto``/``none``/``any``/``tool``;
  ``parallel_tool_calls: false`` -> ``tool_choice.disable_parallel_tool_use``.
* ``stop`` -> ``stop_sequences``; ``max_completion_tokens``/``max_tokens`` ->
  ``max_tokens`` (required by Anthropic: else ``default_max_tokens``, else 4096);
  ``temperature``, ``top_p``, ``top_k`` pass through (Anthropic validates ranges).
* ``response_format`` ``json_schema`` -> ``output_config.format``
  (``{"type":"json_schema","schema":...}``, Anthropic's GA structured outputs, see
  platform.claude.com/docs/en/build-with-claude/structured-outputs); the JSON then
  arrives as ordinary text.  ``json_object`` has no Anthropic equivalent (its
  structured outputs need a schema) -> unsupported.
* ``reasoning_effort`` -> ``thinking: {type: enabled, budget_tokens}`` with
  minimal 1024, low 2048, medium 8192, high 16384, xhigh 32768 ("none" -> no
  thinking).  When ``max_tokens`` was not given it becomes budget + default; when it
  was given it is kept and the budget is capped at half of it (floor 1024); if it is
  still not above the budget, ``max_tokens`` is raised to budget + max_tokens.
  Anthropic rejects ``temperature`` (other than 1) and ``top_k`` with thinking, so
  those are unsupported then.
* ``user`` / ``safety_identifier`` -> ``metadata.user_id``.
* Unsupported (TranslationError 400 naming the param unless ``drop_unsupported``):
  ``n > 1``, ``logprobs: true``, ``top_logprobs``, non-zero ``presence_penalty`` /
  ``frequency_penalty``, ``logit_bias``, ``seed``, ``audio`` / audio ``modalities``,
  ``prediction``, ``web_search_options``, legacy ``functions``/``function_call``,
  non-function tools, ``input_audio`` parts, ``response_format: json_object``.
* Ignored: ``stream_options`` (the stream translator's business), ``store``,
  ``metadata``, ``service_tier``, ``prompt_cache_key``, ``verbosity``, ``model``
  and unknown fields.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .common import (
    assistant_tool_calls,
    content_parts,
    file_data_of,
    function_tools,
    image_url_of,
    invalid_role,
    map_messages,
    max_tokens_of,
    parse_data_url,
    reasoning_effort_of,
    reject_fields,
    response_format_of,
    stop_list,
    text_of,
    tool_choice_of,
    unsupported_handler,
)

__all__ = ["HEADERS", "PATH", "THINKING_BUDGETS", "build_request"]

PATH = "/v1/messages"
HEADERS = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
DEFAULT_MAX_TOKENS = 4096
MIN_THINKING_BUDGET = 1024
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 32768}

_encode = msgspec.json.Encoder().encode
_PROVIDER = "Anthropic"
_UNSUPPORTED_FIELDS = (
    "logit_bias",
    "seed",
    "audio",
    "prediction",
    "web_search_options",
    "functions",
    "function_call",
)


def build_request(
    body: dict[str, Any],
    upstream_model: str,
    *,
    default_max_tokens: int | None = None,
    drop_unsupported: bool = False,
) -> tuple[str, dict[str, str], bytes]:
    """Translate an OpenAI chat request dict; see the module docstring."""

    unsupported = unsupported_handler(_PROVIDER, drop_unsupported)

    _check_unsupported(body, unsupported)
    out: dict[str, Any] = {"model": upstream_model}
    system, messages = _messages(body.get("messages"), unsupported)
    if system:
        out["system"] = system
    out["messages"] = messages

    max_tokens = max_tokens_of(body)
    effort = reasoning_effort_of(body)
    budget = THINKING_BUDGETS.get(effort) if effort else None
    if budget is not None:
        if max_tokens is None:
            max_tokens = budget + (default_max_tokens or DEFAULT_MAX_TOKENS)
        else:
            budget = max(MIN_THINKING_BUDGET, min(budget, max_tokens // 2))
            if max_tokens <= budget:
                max_tokens += budget
        out["thinking"] = {"type": "enabled", "budget_tokens": budget}
    out["max_tokens"] = max_tokens or default_max_tokens or DEFAULT_MAX_TOKENS

    stops = stop_list(body.get("stop"))
    if stops:
        out["stop_sequences"] = stops
    for key in ("temperature", "top_p", "top_k"):
        value = body.get(key)
        if value is None:
            continue
        if budget is not None and (key == "top_k" or (key == "temperature" and value != 1)):
            unsupported(key, "not allowed together with reasoning_effort")
            continue
        out[key] = value

    tools = body.get("tools")
    if tools:
        out["tools"] = _tools(tools, unsupported)
        choice = _tool_choice(body.get("tool_choice"))
        if body.get("parallel_tool_calls") is False:
            choice = choice or {"type": "auto"}
            if choice["type"] != "none":
                choice["disable_parallel_tool_use"] = True
        if choice:
            out["tool_choice"] = choice

    fmt = _response_format(body.get("response_format"), unsupported)
    if fmt:
        out["output_config"] = {"format": fmt}

    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    if body.get("stream"):
        out["stream"] = True
    return PATH, dict(HEADERS), _encode(out)


def _check_unsupported(body: dict[str, Any], unsupported: Any) -> None:
    n = body.get("n")
    if n is not None and n != 1:
        unsupported("n", "only one choice can be generated")
    if body.get("logprobs"):
        unsupported("logprobs")
    if body.get("top_logprobs") is not None:
        unsupported("top_logprobs")
    for key in ("presence_penalty", "frequency_penalty"):
        if body.get(key):
            unsupported(key)
    reject_fields(body, unsupported, _UNSUPPORTED_FIELDS)


def _messages(raw: Any, unsupported: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    def tool_result(msg: dict[str, Any], param: str) -> dict[str, Any]:
        return {
            "type": "tool_result",
            "tool_use_id": str(msg.get("tool_call_id") or ""),
            "content": _tool_result_content(msg.get("content"), f"{param}.content"),
        }

    def turn(role: Any, msg: dict[str, Any], param: str) -> dict[str, Any] | None:
        if role == "user":
            return {"role": "user", "content": _user_content(msg.get("content"), f"{param}.content", unsupported)}
        if role == "assistant":
            blocks = _assistant_blocks(msg, param)
            return {"role": "assistant", "content": blocks} if blocks else None
        if role == "function":
            unsupported(f"{param}.role", "legacy function messages")
            return None
        raise invalid_role(role, param)

    return map_messages(
        raw,
        system=lambda text: {"type": "text", "text": text},
        tool_result=tool_result,
        results_turn=lambda results: {"role": "user", "content": results},
        turn=turn,
    )


def _image_block(url: str) -> dict[str, Any]:
    data = parse_data_url(url)
    if data is not None:
        return {"type": "image", "source": {"type": "base64", "media_type": data[0], "data": data[1]}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _user_content(content: Any, param: str, unsupported: Any) -> str | list[dict[str, Any]]:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    blocks: list[dict[str, Any]] = []
    for p, part in content_parts(content, param):
        kind = part.get("type")
        block: dict[str, Any] | None = None
        if kind == "text":
            block = {"type": "text", "text": str(part.get("text") or "")}
        elif kind == "image_url":
            block = _image_block(image_url_of(part, p))
        elif kind == "file":
            inline = file_data_of(part)
            if inline is not None:
                mime, data = inline
                if mime.startswith("image/"):
                    block = {"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}}
                else:
                    block = {
                        "type": "document",
                        "source": {"type": "base64", "media_type": mime, "data": data},
                    }
            else:
                unsupported(p, "file parts need inline file_data")
        else:
            unsupported(p, f"content part type {kind!r}")
        if block is None:
            continue
        if isinstance(part.get("cache_control"), dict):
            block["cache_control"] = part["cache_control"]
        if block["type"] == "text" and not block["text"]:
            continue
        blocks.append(block)
    return blocks


def _tool_result_content(content: Any, param: str) -> str | list[dict[str, Any]]:
    if isinstance(content, list):
        blocks = []
        for j, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") == "image_url":
                image = part.get("image_url")
                url = image.get("url") if isinstance(image, dict) else image
                blocks.append(_image_block(str(url)))
            else:
                text = text_of([part], f"{param}[{j}]")
                if text:
                    blocks.append({"type": "text", "text": text})
        return blocks
    return text_of(content, param)


def _assistant_blocks(msg: dict[str, Any], param: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for tb in msg.get("thinking_blocks") or ():
        if isinstance(tb, dict) and tb.get("type") == "thinking" and tb.get("signature"):
            blocks.append(
                {"type": "thinking", "thinking": tb.get("thinking") or "", "signature": tb["signature"]}
            )
        elif isinstance(tb, dict) and tb.get("type") == "redacted_thinking" and tb.get("data"):
            blocks.append({"type": "redacted_thinking", "data": tb["data"]})
    text = text_of(msg.get("content"), f"{param}.content")
    if text:
        blocks.append({"type": "text", "text": text})
    for call_id, name, args in assistant_tool_calls(msg, param):
        blocks.append({"type": "tool_use", "id": call_id, "name": name, "input": args})
    return blocks


def _tools(tools: Any, unsupported: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name, fn in function_tools(tools, unsupported):
        spec: dict[str, Any] = {"name": name}
        if fn.get("description"):
            spec["description"] = fn["description"]
        spec["input_schema"] = fn.get("parameters") or {"type": "object", "properties": {}}
        if fn.get("strict") is True:
            spec["strict"] = True
        out.append(spec)
    return out


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    parsed = tool_choice_of(choice)
    if parsed is None:
        return None
    mode, name = parsed
    if mode == "function":
        return {"type": "tool", "name": name}
    return {"type": {"auto": "auto", "none": "none", "required": "any"}[mode]}


def _response_format(fmt: Any, unsupported: Any) -> dict[str, Any] | None:
    parsed = response_format_of(fmt)
    if parsed is None or parsed[0] == "text":
        return None
    kind, schema = parsed
    if kind == "json_object":
        unsupported("response_format", "json_object needs a schema on Anthropic; use json_schema")
        return None
    return {"type": "json_schema", "schema": schema}
