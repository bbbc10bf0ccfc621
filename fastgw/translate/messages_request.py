"""Anthropic Messages request -> OpenAI chat completions request (the reverse of
:mod:`fastgw.translate.anthropic_request`), for the ``/v1/messages`` front door in front of an
OpenAI-compatible provider, and, chained through :mod:`fastgw.translate.gemini_request`, a
Gemini one.

``to_chat(body, *, target, drop_unsupported=False, reasoning=True) -> (chat dict, dropped)``:
``target`` is ``"openai"`` or ``"gemini"`` (what the chat request is for); ``dropped`` lists,
in order and once each, what was left out (for the ``x-fastgw-dropped-params`` header and the
dropped-params counter).  The chat dict has no ``model`` (the caller's business).

Mapping:

* ``system`` (a string or text blocks) -> one leading ``system`` message, blocks joined with a
  blank line; a ``system`` message among ``messages`` (Claude Code sends them for models it
  does not know) -> a ``system`` message in place.
* ``user`` content: ``text`` -> text parts (one text block alone -> a string); ``image``
  base64 -> an ``image_url`` data URL, ``url`` -> that URL; ``document`` base64 (PDF) -> a
  ``file`` part with ``file_data``, ``text`` source -> a text part, ``content`` source -> its
  text blocks; ``tool_result`` -> ``tool`` messages placed before the rest of the turn
  (``content`` string or blocks: text joined; ``is_error: true`` -> the text is prefixed
  ``"Error: "``; images in a result follow in a ``user`` message, since chat tool messages
  are text only).
* ``assistant`` content: text blocks -> ``content``; ``tool_use`` -> ``tool_calls`` (``input``
  JSON-encoded as ``arguments``); ``thinking`` / ``redacted_thinking`` are the provider's own
  earlier output and are not sent (a chat request has no place for them).  A ``tool_use`` id
  that carries a Gemini thought signature (``<id>__ts__<sig>``, see
  :mod:`fastgw.translate.gemini`) is kept as is, so the signature goes back to Gemini.
* ``tools``: custom tools (no ``type`` or ``type: custom``) -> function tools
  (``input_schema`` -> ``parameters``, ``strict`` kept); Anthropic's hosted and built-in tool
  types (``web_search_*``, ``bash_*``, ``code_execution_*``, ...) cannot run on the target:
  dropped and named (by type).  ``tool_choice`` auto / any / tool / none -> ``auto`` /
  ``required`` / named function / ``none``; ``disable_parallel_tool_use`` ->
  ``parallel_tool_calls: false``.
* ``max_tokens`` (required, as Anthropic requires it), ``temperature``, ``top_p`` as they are;
  ``top_k`` for Gemini (the OpenAI API has none: unsupported there); ``stop_sequences`` ->
  ``stop``; ``stream`` -> ``stream`` (+ ``stream_options.include_usage`` for ``openai``);
  ``metadata.user_id`` -> ``user``.
* ``thinking`` ``enabled`` with ``budget_tokens`` -> ``reasoning_effort``: up to 2048 ``low``,
  up to 8192 ``medium``, above ``high`` (the inverse of the OpenAI door's budgets);
  ``adaptive`` -> ``output_config.effort`` when given (``max`` -> ``high``), else the model's
  default; ``disabled`` -> nothing.  With ``reasoning=False`` (a target model that does not
  reason) ``thinking`` is dropped and named.
* ``output_config.format`` (``json_schema``) -> ``response_format`` json_schema; its other
  members (``effort``) only steer Anthropic's own machinery: used as above or dropped.
* Dropped and named, whatever the settings (they steer only Anthropic's own machinery and
  cannot change the meaning of an answer): ``context_management``, ``container``,
  ``service_tier``, ``mcp_servers``, a top-level ``cache_control``, and every block's
  ``cache_control`` (named once, as ``cache_control``).
* Anything else -- an unknown top-level field, an unknown content block type, a URL
  document, ``top_k`` for ``openai`` -- is a :class:`TranslationError` 400 naming it, or,
  with ``drop_unsupported``, dropped and named.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .common import reject
from .errors import TranslationError

__all__ = ["DROPPED_ALWAYS", "to_chat"]

_encode = msgspec.json.Encoder().encode

_KNOWN = frozenset({
    "model", "messages", "system", "max_tokens", "metadata", "stop_sequences", "stream",
    "temperature", "top_p", "top_k", "tools", "tool_choice", "thinking", "output_config",
})
# Top-level fields that only steer Anthropic's own machinery: always dropped, and named.
DROPPED_ALWAYS = ("context_management", "container", "service_tier", "mcp_servers", "cache_control")
_PROVIDERS = {"openai": "OpenAI-compatible", "gemini": "Gemini"}
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "max": "high", "xhigh": "high"}


class _Context:
    """What a translation dropped, and the rule for what it cannot honour."""

    __slots__ = ("drop", "dropped", "provider")

    def __init__(self, provider: str, drop: bool) -> None:
        self.provider = provider
        self.drop = drop
        self.dropped: list[str] = []

    def dropping(self, name: str) -> None:
        if name not in self.dropped:
            self.dropped.append(name)

    def unsupported(self, param: str, detail: str = "") -> None:
        if not self.drop:
            raise reject(param, self.provider, detail)
        self.dropping(param)


def _bad(message: str, param: str, code: str = "invalid_value") -> TranslationError:
    return TranslationError(message, param=param, code=code)


def to_chat(
    body: dict[str, Any], *, target: str, drop_unsupported: bool = False, reasoning: bool = True
) -> tuple[dict[str, Any], list[str]]:
    """An Anthropic Messages request dict -> (OpenAI chat request dict, dropped names)."""
    ctx = _Context(_PROVIDERS[target], drop_unsupported)
    for key in body:
        if key in _KNOWN:
            continue
        if key in DROPPED_ALWAYS:
            ctx.dropping(key)
        else:
            ctx.unsupported(key, "unknown field")
    chat: dict[str, Any] = {}
    messages: list[dict[str, Any]] = []
    system = _system(body.get("system"), ctx)
    if system:
        messages.append({"role": "system", "content": system})
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise _bad("'messages' must be a non-empty array.", "messages")
    for i, msg in enumerate(raw):
        _message(msg, f"messages[{i}]", messages, ctx)
    chat["messages"] = messages

    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _bad("'max_tokens' is required and must be a positive integer.", "max_tokens")
    chat["max_tokens"] = max_tokens
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            chat[key] = body[key]
    if body.get("top_k") is not None:
        if target == "gemini":
            chat["top_k"] = body["top_k"]
        else:
            ctx.unsupported("top_k")
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _bad("'stop_sequences' must be an array of strings.", "stop_sequences", "invalid_type")
        if stops:
            chat["stop"] = stops
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str) and metadata["user_id"]:
        chat["user"] = metadata["user_id"]

    tools = body.get("tools")
    if tools is not None:
        out_tools = _tools(tools, ctx)
        if out_tools:
            chat["tools"] = out_tools
            _tool_choice(body.get("tool_choice"), chat)
    _reasoning(body, chat, ctx, reasoning)
    if body.get("stream") is True:
        chat["stream"] = True
        if target == "openai":
            chat["stream_options"] = {"include_usage": True}
    return chat, ctx.dropped


# -- messages ----------------------------------------------------------------------------------


def _cache_control(block: dict[str, Any], ctx: _Context) -> None:
    if "cache_control" in block:
        ctx.dropping("cache_control")


def _system(system: Any, ctx: _Context) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    if not isinstance(system, list):
        raise _bad("'system' must be a string or an array of text blocks.", "system", "invalid_type")
    texts = []
    for j, block in enumerate(system):
        param = f"system[{j}]"
        if not isinstance(block, dict) or block.get("type") != "text":
            ctx.unsupported(param, "only text blocks")
            continue
        _cache_control(block, ctx)
        if block.get("text"):
            texts.append(str(block["text"]))
    return "\n\n".join(texts)


def _blocks(content: Any, param: str) -> list[tuple[str, dict[str, Any]]]:
    if isinstance(content, str):
        return [(param, {"type": "text", "text": content})]
    if not isinstance(content, list):
        raise _bad(f"'{param}' must be a string or an array of content blocks.", param, "invalid_type")
    out = []
    for j, block in enumerate(content):
        p = f"{param}[{j}]"
        if not isinstance(block, dict):
            raise _bad(f"'{p}' must be an object.", p, "invalid_type")
        out.append((p, block))
    return out


def _image(block: dict[str, Any], param: str, ctx: _Context) -> dict[str, Any] | None:
    source = block.get("source") if isinstance(block.get("source"), dict) else {}
    kind = source.get("type")
    if kind == "base64":
        url = f"data:{source.get('media_type') or 'image/png'};base64,{source.get('data') or ''}"
    elif kind == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        ctx.unsupported(f"{param}.source", f"image source type {kind!r}")
        return None
    return {"type": "image_url", "image_url": {"url": url}}


def _document(block: dict[str, Any], param: str, ctx: _Context) -> list[dict[str, Any]]:
    source = block.get("source") if isinstance(block.get("source"), dict) else {}
    kind = source.get("type")
    if kind == "base64":
        media = source.get("media_type") or "application/pdf"
        file = {"file_data": f"data:{media};base64,{source.get('data') or ''}",
                "filename": str(block.get("title") or "document.pdf")}
        return [{"type": "file", "file": file}]
    if kind == "text":
        return [{"type": "text", "text": str(source.get("data") or "")}]
    if kind == "content":
        inner = source.get("content")
        if isinstance(inner, str):
            return [{"type": "text", "text": inner}]
        parts = []
        for p, b in _blocks(inner or [], f"{param}.source.content"):
            part = _user_part(b, p, ctx)
            if part is not None:
                parts.append(part)
        return parts
    ctx.unsupported(f"{param}.source", f"document source type {kind!r}")
    return []


def _user_part(block: dict[str, Any], param: str, ctx: _Context) -> dict[str, Any] | None:
    kind = block.get("type")
    _cache_control(block, ctx)
    if kind == "text":
        return {"type": "text", "text": str(block.get("text") or "")}
    if kind == "image":
        return _image(block, param, ctx)
    ctx.unsupported(f"{param}.type", f"content block type {kind!r}")
    return None


def _tool_result(block: dict[str, Any], param: str, ctx: _Context) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A ``tool_result`` block -> (the ``tool`` message, image parts for a following user turn)."""
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    content = block.get("content")
    if content is not None:
        for p, b in _blocks(content, f"{param}.content"):
            _cache_control(b, ctx)
            if b.get("type") == "text":
                texts.append(str(b.get("text") or ""))
            elif b.get("type") == "image":
                image = _image(b, p, ctx)
                if image is not None:
                    images.append(image)
            elif b.get("type") == "document":
                for part in _document(b, p, ctx):
                    if part["type"] == "text":
                        texts.append(part["text"])
                    else:
                        images.append(part)
            else:
                ctx.unsupported(f"{p}.type", f"tool result block type {b.get('type')!r}")
    text = "\n".join(texts)
    if block.get("is_error") is True:
        text = "Error: " + text if text else "Error"
    msg = {"role": "tool", "tool_call_id": str(block.get("tool_use_id") or ""), "content": text}
    return msg, images


def _user(content: Any, param: str, out: list[dict[str, Any]], ctx: _Context) -> None:
    if isinstance(content, str):
        out.append({"role": "user", "content": content})
        return
    parts: list[dict[str, Any]] = []
    late: list[dict[str, Any]] = []  # images from tool results
    for p, block in _blocks(content, param):
        kind = block.get("type")
        if kind == "tool_result":
            _cache_control(block, ctx)
            msg, images = _tool_result(block, p, ctx)
            out.append(msg)
            late += images
        elif kind == "document":
            _cache_control(block, ctx)
            parts += _document(block, p, ctx)
        else:
            part = _user_part(block, p, ctx)
            if part is not None and not (part["type"] == "text" and not part["text"]):
                parts.append(part)
    parts = late + parts
    if not parts:
        return
    if len(parts) == 1 and parts[0]["type"] == "text":
        out.append({"role": "user", "content": parts[0]["text"]})
    else:
        out.append({"role": "user", "content": parts})


def _assistant(content: Any, param: str, out: list[dict[str, Any]], ctx: _Context) -> None:
    if isinstance(content, str):
        if content:
            out.append({"role": "assistant", "content": content})
        return
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for p, block in _blocks(content, param):
        kind = block.get("type")
        _cache_control(block, ctx)
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "tool_use":
            args = block.get("input")
            calls.append({"id": str(block.get("id") or ""), "type": "function",
                          "function": {"name": str(block.get("name") or ""),
                                       "arguments": _encode(args if args is not None else {}).decode()}})
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            ctx.unsupported(f"{p}.type", f"content block type {kind!r}")
    text = "".join(texts)
    if not text and not calls:
        return
    msg: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        msg["tool_calls"] = calls
    out.append(msg)


def _message(msg: Any, param: str, out: list[dict[str, Any]], ctx: _Context) -> None:
    if not isinstance(msg, dict):
        raise _bad(f"'{param}' must be an object.", param, "invalid_type")
    role = msg.get("role")
    if role == "user":
        _user(msg.get("content"), f"{param}.content", out, ctx)
    elif role == "assistant":
        _assistant(msg.get("content"), f"{param}.content", out, ctx)
    elif role == "system":
        text = _system(msg.get("content"), ctx)
        if text:
            out.append({"role": "system", "content": text})
    else:
        raise _bad(f"Invalid role {role!r} in '{param}' (user or assistant).", f"{param}.role")


# -- tools and reasoning -----------------------------------------------------------------------


def _tools(tools: Any, ctx: _Context) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("'tools' must be an array.", "tools", "invalid_type")
    out = []
    for k, tool in enumerate(tools):
        param = f"tools[{k}]"
        if not isinstance(tool, dict):
            raise _bad(f"'{param}' must be an object.", param, "invalid_type")
        kind = tool.get("type")
        if kind not in (None, "custom"):
            ctx.dropping(str(kind))  # a hosted / built-in tool the target cannot run
            continue
        _cache_control(tool, ctx)
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise _bad(f"'{param}.name' is required.", f"{param}.name")
        fn: dict[str, Any] = {"name": name}
        if tool.get("description"):
            fn["description"] = tool["description"]
        fn["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
        if tool.get("strict") is True:
            fn["strict"] = True
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any, chat: dict[str, Any]) -> None:
    if choice is None:
        return
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "auto":
        chat["tool_choice"] = "auto"
    elif kind == "any":
        chat["tool_choice"] = "required"
    elif kind == "none":
        chat["tool_choice"] = "none"
    elif kind == "tool" and isinstance(choice.get("name"), str) and choice["name"]:
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise _bad("Invalid value for 'tool_choice'.", "tool_choice")
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        chat["parallel_tool_calls"] = False


def _effort_of_budget(budget: Any) -> str:
    if not isinstance(budget, int) or budget <= 2048:
        return "low"
    return "medium" if budget <= 8192 else "high"


def _reasoning(body: dict[str, Any], chat: dict[str, Any], ctx: _Context, allowed: bool) -> None:
    config = body.get("output_config")
    effort_hint = None
    if config is not None:
        if not isinstance(config, dict):
            raise _bad("'output_config' must be an object.", "output_config", "invalid_type")
        for key, value in config.items():
            if key == "format":
                _output_format(value, chat, ctx)
            elif key == "effort" and isinstance(value, str):
                effort_hint = _EFFORTS.get(value)
            else:
                ctx.dropping(f"output_config.{key}" if key.isidentifier() else "output_config")
    thinking = body.get("thinking")
    effort = None
    if isinstance(thinking, dict):
        kind = thinking.get("type")
        if kind == "enabled":
            effort = _effort_of_budget(thinking.get("budget_tokens"))
        elif kind == "adaptive":
            effort = effort_hint
        elif kind != "disabled":
            ctx.unsupported("thinking.type", f"thinking type {kind!r}")
    elif thinking is not None:
        raise _bad("'thinking' must be an object.", "thinking", "invalid_type")
    if effort_hint is not None and effort is None:
        ctx.dropping("output_config.effort")
    if effort is None:
        return
    if allowed:
        chat["reasoning_effort"] = effort
    else:
        ctx.dropping("thinking")


def _output_format(fmt: Any, chat: dict[str, Any], ctx: _Context) -> None:
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        ctx.unsupported("output_config.format", "only json_schema with a schema")
        return
    chat["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt["schema"]}}

