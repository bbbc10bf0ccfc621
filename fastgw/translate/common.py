"""Helpers shared by the request translators (OpenAI chat request -> provider).

Contract:

* :func:`text_of` flattens an OpenAI ``content`` (string, ``None`` or list of parts)
  to its text; non-text parts raise :class:`TranslationError` when ``strict``.
* :func:`parse_data_url` splits ``data:<mime>;base64,<data>``; :func:`guess_mime`
  guesses a media type from a URL's extension (default ``image/jpeg``).
* :func:`parse_arguments` decodes an assistant tool call's JSON ``arguments``
  string into an object (empty string -> ``{}``), raising ``TranslationError``
  naming the parameter when it is not a JSON object.
* :func:`reject` raises the uniform "provider does not support X" error.
* :func:`stop_list` normalises ``stop`` (string or list) to a list.
* :data:`REASONING_EFFORTS` is the accepted set of ``reasoning_effort`` values.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import msgspec

from .errors import TranslationError

__all__ = [
    "REASONING_EFFORTS",
    "guess_mime",
    "parse_arguments",
    "parse_data_url",
    "reject",
    "stop_list",
    "text_of",
]

REASONING_EFFORTS = frozenset({"none", "minimal", "low", "medium", "high", "xhigh"})

_decode = msgspec.json.decode

_EXTRA_MIME = {
    ".webp": "image/webp",
    ".heic": "image/heic",
    ".heif": "image/heif",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".pdf": "application/pdf",
    ".mp3": "audio/mp3",
    ".wav": "audio/wav",
    ".mp4": "video/mp4",
}


def reject(param: str, provider: str, detail: str = "") -> TranslationError:
    """The error for a parameter ``provider`` cannot honour (caller raises it)."""
    msg = f"The '{param}' parameter is not supported by the {provider} backend of this model"
    if detail:
        msg += f" ({detail})"
    return TranslationError(msg + ".", param=param, code="unsupported_parameter")


def unsupported_handler(provider: str, drop: bool) -> Callable[..., None]:
    """``unsupported(param, detail="")``: raises :func:`reject`'s 400, or does nothing when
    the provider's config says to drop what it cannot honour."""

    def unsupported(param: str, detail: str = "") -> None:
        if not drop:
            raise reject(param, provider, detail)

    return unsupported


def text_of(content: Any, param: str, *, strict: bool = True) -> str:
    """Flatten ``content`` to text (text / refusal parts joined with no separator)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise TranslationError(f"Invalid type for '{param}'.", param=param, code="invalid_type")
    out: list[str] = []
    for i, part in enumerate(content):
        if isinstance(part, str):
            out.append(part)
            continue
        if not isinstance(part, dict):
            raise TranslationError(
                f"Invalid content part '{param}[{i}]'.", param=f"{param}[{i}]", code="invalid_type"
            )
        kind = part.get("type")
        if kind == "text":
            out.append(str(part.get("text") or ""))
        elif kind == "refusal":
            out.append(str(part.get("refusal") or ""))
        elif strict:
            raise TranslationError(
                f"Content part type '{kind}' is not allowed in '{param}'.",
                param=f"{param}[{i}]",
                code="unsupported_value",
            )
    return "".join(out)


def parse_data_url(url: str) -> tuple[str, str] | None:
    """``data:<mime>[;...];base64,<payload>`` -> (mime, payload); ``None`` if not a base64 data URL."""
    if not url.startswith("data:"):
        return None
    head, sep, payload = url.partition(",")
    if not sep:
        return None
    meta = head[5:].split(";")
    if "base64" not in meta[1:]:
        return None
    mime = meta[0] or "application/octet-stream"
    return mime, payload


def guess_mime(url: str, default: str = "image/jpeg") -> str:
    """Media type from the URL path's extension, else ``default``."""
    path = urlsplit(url).path.lower()
    dot = path.rfind(".")
    if dot >= 0:
        ext = path[dot:]
        if ext in _EXTRA_MIME:
            return _EXTRA_MIME[ext]
        guessed = mimetypes.types_map.get(ext)
        if guessed:
            return guessed
    return default


def parse_arguments(arguments: Any, param: str) -> dict[str, Any]:
    """Tool-call ``arguments`` (JSON text, or already an object) -> dict."""
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    if isinstance(arguments, str):
        try:
            value = _decode(arguments)
        except msgspec.DecodeError:
            value = None
        if isinstance(value, dict):
            return value
    raise TranslationError(
        f"'{param}' must be a JSON object encoded as a string.", param=param, code="invalid_value"
    )


def stop_list(stop: Any) -> list[str]:
    """``stop`` as a list of non-empty strings."""
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop] if stop else []
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return [s for s in stop if s]
    raise TranslationError("'stop' must be a string or a list of strings.", param="stop", code="invalid_type")


def max_tokens_of(body: dict[str, Any]) -> int | None:
    """``max_completion_tokens`` (preferred) or ``max_tokens``."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TranslationError(
                    f"'{key}' must be a positive integer.", param=key, code="invalid_value"
                )
            return value
    return None


def reasoning_effort_of(body: dict[str, Any]) -> str | None:
    """Validated ``reasoning_effort`` (also read from a Responses-style ``reasoning.effort``)."""
    effort = body.get("reasoning_effort")
    if effort is None:
        reasoning = body.get("reasoning")
        if isinstance(reasoning, dict):
            effort = reasoning.get("effort")
    if effort is None:
        return None
    if effort not in REASONING_EFFORTS:
        raise TranslationError(
            f"Invalid value for 'reasoning_effort': {effort!r}.",
            param="reasoning_effort",
            code="invalid_value",
        )
    return effort


def tool_choice_of(choice: Any) -> tuple[str, str | None] | None:
    """OpenAI ``tool_choice`` as ``(mode, function name)``: mode is auto, none, required or
    function (with its name); None when absent. Raises a 400 naming ``tool_choice``."""
    if choice is None:
        return None
    if choice in ("auto", "none", "required"):
        return choice, None
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if isinstance(name, str) and name:
            return "function", name
    raise TranslationError("Invalid value for 'tool_choice'.", param="tool_choice", code="invalid_value")


def function_tools(tools: Any, unsupported: Any) -> list[tuple[str, dict[str, Any]]]:
    """``(name, function)`` for each OpenAI function tool; other tool kinds go to ``unsupported``.

    Raises :class:`TranslationError` for a ``tools`` that is not an array or a
    function without a name (naming the param).
    """
    if not isinstance(tools, list):
        raise TranslationError("'tools' must be an array.", param="tools", code="invalid_type")
    out: list[tuple[str, dict[str, Any]]] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            unsupported(f"tools[{i}]", "only function tools")
            continue
        fn = tool.get("function") or {}
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise TranslationError(
                f"'tools[{i}].function.name' is required.", param=f"tools[{i}].function.name"
            )
        out.append((name, fn))
    return out


def tool_call_names(messages: list[Any]) -> dict[str, str]:
    """Map every assistant tool call id in ``messages`` to its function name."""
    names: dict[str, str] = {}
    for msg in messages:
        if isinstance(msg, dict) and msg.get("role") == "assistant":
            for tc in msg.get("tool_calls") or ():
                if isinstance(tc, dict) and tc.get("id"):
                    fn = tc.get("function") or {}
                    names[str(tc["id"])] = str(fn.get("name") or "")
    return names
