"""The OpenAI Responses API on top of chat completions (for translated providers).

The core serves ``POST /v1/responses`` for Anthropic / Gemini models by chaining:
Responses request --:func:`responses_to_chat`--> chat request --provider
translator--> provider ... provider reply --provider translator--> chat completion
(or chunk stream) --:func:`chat_to_responses` / :class:`ResponsesStreamTranslator`
--> Responses object (or event stream).

:func:`responses_to_chat` (stateless; raises :class:`TranslationError`):

* ``instructions`` -> a leading ``system`` message; ``input`` string -> one user
  message; ``input`` items: messages (``type: message`` or bare ``{role,
  content}``; parts ``input_text`` / ``output_text`` / ``refusal`` -> text,
  ``input_image`` -> ``image_url``, ``input_file`` with ``file_data`` -> ``file``),
  ``function_call`` -> assistant ``tool_calls`` (consecutive calls, and a preceding
  assistant text, share one assistant message), ``function_call_output`` -> ``tool``
  messages; ``reasoning`` items are dropped (no portable form); ``item_reference``
  and unknown item types -> 400.
* ``tools`` (flat ``{"type":"function","name",...}``) -> chat tools; a ``namespace``
  tool (a named group of function tools, as Codex sends) is flattened into its function
  tools (each keeps its name, or becomes ``<namespace>__<name>`` when that name is taken),
  and calls to them come back as ``function_call`` items with the original ``name`` and
  ``namespace`` (:func:`namespace_names`); hosted tools the target cannot run
  (``web_search``, ``file_search``, ``code_interpreter``, ...) are dropped and named;
  other tool types -> 400.  ``tool_choice`` string or ``{"type":"function","name"}``;
  ``max_output_tokens`` -> ``max_completion_tokens``; ``temperature``, ``top_p``,
  ``parallel_tool_calls``, ``top_logprobs``, ``user`` / ``safety_identifier``,
  ``reasoning.effort`` -> ``reasoning_effort``; ``text.format`` json_object /
  json_schema (flat ``name``/``schema``/``strict``) -> ``response_format``.
* ``stream: true`` -> ``stream`` plus ``stream_options.include_usage`` (the final
  ``response.completed`` needs usage).  ``previous_response_id`` / ``conversation``
  -> 400 (no stored state here); ``store``, ``metadata``, ``truncation``,
  ``background: false`` are ignored; ``include``, ``prompt_cache_key`` and
  ``client_metadata`` only steer OpenAI's own machinery: dropped and named.  Names of
  dropped fields go to the ``dropped`` list the caller passes (for the
  ``x-fastgw-dropped-params`` header).

:func:`chat_to_responses` turns a ``chat.completion`` body into a ``response``
object; ``reasoning_content`` -> a ``reasoning`` item with ``reasoning_text``
content, text -> a ``message`` item, tool calls -> ``function_call`` items
(``call_id`` = the chat tool-call id).  ``finish_reason`` ``length`` /
``content_filter`` -> ``status: incomplete`` with ``incomplete_details.reason``
``max_output_tokens`` / ``content_filter``.  Usage is renamed (``input_tokens``,
``output_tokens``, ``*_details``).  Pass the original Responses request as
``request=`` to echo ``instructions``, ``tools``, ``tool_choice`` etc.

:class:`ResponsesStreamTranslator` is in :mod:`fastgw.translate.responses_stream`.
"""

from __future__ import annotations

import os
import time
from typing import Any

import msgspec

from .errors import TranslationError
from .responses_stream import ResponsesStreamTranslator, response_object, responses_usage
from .responses_tools import HOSTED_TOOLS, chat_name, flat_tools, namespace_names, tool_call_item_name

__all__ = ["ResponsesStreamTranslator", "TranslationError", "chat_to_responses", "namespace_names",
           "responses_to_chat"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

_IGNORED_ITEMS = frozenset({"reasoning"})
_STEERING = ("include", "prompt_cache_key", "client_metadata")


def _bad(message: str, param: str, code: str = "invalid_value") -> TranslationError:
    return TranslationError(message, param=param, code=code)


def _parts(content: Any, param: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad(f"Invalid type for '{param}'.", param, "invalid_type")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        p = f"{param}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": str(part.get("text") or "")})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(part.get("refusal") or "")})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                raise _bad(f"'{p}.image_url' is required (file_id is not supported here).", p)
            image: dict[str, Any] = {"url": url}
            if part.get("detail"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_file" and isinstance(part.get("file_data"), str):
            file = {"file_data": part["file_data"]}
            if part.get("filename"):
                file["filename"] = part["filename"]
            parts.append({"type": "file", "file": file})
        else:
            raise _bad(f"Content part type {kind!r} is not supported in '{p}'.", p, "unsupported_value")
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _messages(body: dict[str, Any], names: dict[str, tuple[str, str]]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    raw = body.get("input")
    if isinstance(raw, str):
        messages.append({"role": "user", "content": raw})
        return messages
    if not isinstance(raw, list):
        raise _bad("'input' must be a string or an array of input items.", "input", "invalid_type")
    for i, item in enumerate(raw):
        param = f"input[{i}]"
        if not isinstance(item, dict):
            raise _bad(f"'{param}' must be an object.", param, "invalid_type")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise _bad(f"Invalid role {role!r} in '{param}'.", f"{param}.role")
            content = _parts(item.get("content"), f"{param}.content")
            messages.append({"role": role, "content": content})
        elif kind == "function_call":
            call = {
                "id": str(item.get("call_id") or item.get("id") or ""),
                "type": "function",
                "function": {
                    "name": chat_name(names, item.get("namespace"), str(item.get("name") or "")),
                    "arguments": str(item.get("arguments") or ""),
                },
            }
            last = messages[-1] if messages else None
            if (
                last is not None
                and last["role"] == "assistant"
                and isinstance(last.get("content"), str | None)
            ):
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else _parts(output, f"{param}.output")
            if not isinstance(text, str):
                text = "".join(p.get("text", "") for p in text if p["type"] == "text")
            messages.append({"role": "tool", "tool_call_id": str(item.get("call_id") or ""), "content": text})
        elif kind in _IGNORED_ITEMS:
            continue
        else:
            raise _bad(
                f"Input item type {kind!r} is not supported for this model.", param, "unsupported_value"
            )
    return messages


def _tools(tools: Any, names: dict[str, tuple[str, str]], dropped: list[str]) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("'tools' must be an array.", "tools", "invalid_type")
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind in HOSTED_TOOLS:
            if kind not in dropped:
                dropped.append(str(kind))
        elif kind not in ("function", "namespace"):
            raise _bad(
                f"Tool type {kind!r} is not supported for this model.", f"tools[{i}]", "unsupported_value"
            )
    out = []
    for tool, ns in flat_tools(tools):
        fn: dict[str, Any] = {"name": chat_name(names, ns, str(tool.get("name") or ""))}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                fn[key] = tool[key]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, str):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and choice.get("name"):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise _bad("Invalid value for 'tool_choice'.", "tool_choice")


def _text_format(text: Any) -> dict[str, Any] | None:
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    if fmt["type"] == "json_schema":
        spec = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": spec}
    raise _bad("Invalid value for 'text.format'.", "text.format")


def responses_to_chat(body: dict[str, Any], dropped: list[str] | None = None) -> dict[str, Any]:
    """A Responses API request dict -> an equivalent chat completions request dict (names of
    dropped fields appended to ``dropped``)."""
    dropped = dropped if dropped is not None else []
    for key in ("previous_response_id", "conversation", "prompt"):
        if body.get(key):
            raise _bad(
                f"'{key}' is not supported for this model (no stored state).", key, "unsupported_parameter"
            )
    if body.get("background"):
        raise _bad("'background' is not supported for this model.", "background", "unsupported_parameter")
    dropped += [key for key in _STEERING if body.get(key) is not None and key not in dropped]
    names = namespace_names(body)
    chat: dict[str, Any] = {"model": body.get("model"), "messages": _messages(body, names)}
    tools = _tools(body["tools"], names, dropped) if body.get("tools") else []
    if tools:
        chat["tools"] = tools
        if body.get("tool_choice") is not None:
            chat["tool_choice"] = _tool_choice(body["tool_choice"])
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = body["max_output_tokens"]
    for key in ("temperature", "top_p", "parallel_tool_calls", "top_logprobs", "user", "safety_identifier"):
        if body.get(key) is not None:
            chat[key] = body[key]
    if body.get("top_logprobs"):
        chat["logprobs"] = True
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort"):
        chat["reasoning_effort"] = reasoning["effort"]
    fmt = _text_format(body.get("text"))
    if fmt:
        chat["response_format"] = fmt
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def _new_id(prefix: str) -> str:
    return prefix + os.urandom(16).hex()


def chat_to_responses(chat_response: bytes, *, model: str, request: dict[str, Any] | None = None) -> bytes:
    """A ``chat.completion`` body -> a Responses API ``response`` object (JSON bytes)."""
    chat = _decode(chat_response)
    choice = (chat.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    if msg.get("reasoning_content"):
        output.append(
            {
                "type": "reasoning",
                "id": _new_id("rs_"),
                "summary": [],
                "content": [{"type": "reasoning_text", "text": msg["reasoning_content"]}],
                "status": "completed",
            }
        )
    content: list[dict[str, Any]] = []
    if msg.get("content"):
        content.append({"type": "output_text", "text": msg["content"], "annotations": [], "logprobs": []})
    if msg.get("refusal"):
        content.append({"type": "refusal", "refusal": msg["refusal"]})
    if content:
        output.append(
            {
                "type": "message",
                "id": _new_id("msg_"),
                "status": "completed",
                "role": "assistant",
                "content": content,
            }
        )
    names = namespace_names(request)
    for tc in msg.get("tool_calls") or ():
        fn = tc.get("function") or {}
        output.append(
            {
                "type": "function_call",
                "id": _new_id("fc_"),
                "call_id": tc.get("id") or "",
                **tool_call_item_name(names, fn.get("name") or ""),
                "arguments": fn.get("arguments") or "",
                "status": "completed",
            }
        )
    usage = responses_usage(chat.get("usage"))
    body = response_object(
        _new_id("resp_"),
        int(chat.get("created") or time.time()),
        model,
        output,
        usage,
        finish_reason=choice.get("finish_reason"),
        request=request,
    )
    return _encode(body)
