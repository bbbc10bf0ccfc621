"""Reading an OpenAI chat request: the validation and walking every request translator shares.

Contract:

* :func:`map_messages` walks ``messages`` (system text, runs of ``tool`` results,
  other turns) and leaves the provider only the shape of each entry;
  :func:`content_parts`, :func:`image_url_of`, :func:`file_data_of` and
  :func:`assistant_tool_calls` read message content and tool calls.
* :func:`reject_fields` reports request fields a provider cannot honour;
  :func:`response_format_of` validates ``response_format``.
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
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

import msgspec

from .errors import TranslationError

__all__ = [
    "REASONING_EFFORTS",
    "assistant_tool_calls",
    "content_parts",
    "file_data_of",
    "guess_mime",
    "image_url_of",
    "map_messages",
    "parse_arguments",
    "parse_data_url",
    "reject",
    "reject_fields",
    "response_format_of",
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


def reject_fields(body: dict[str, Any], unsupported: Callable[..., None], keys: Iterable[str]) -> None:
    """Report each of ``keys`` present in ``body``, then non-text output ``modalities``."""
    for key in keys:
        if body.get(key) is not None:
            unsupported(key)
    modalities = body.get("modalities")
    if isinstance(modalities, list) and any(m != "text" for m in modalities):
        unsupported("modalities", "only text output")


def invalid_role(role: Any, param: str) -> TranslationError:
    """The error for a message whose ``role`` the provider has no place for (caller raises it)."""
    return TranslationError(f"Invalid role {role!r} in '{param}'.", param=f"{param}.role", code="invalid_value")


def map_messages(
    raw: Any,
    *,
    system: Callable[[str], dict[str, Any]],
    tool_result: Callable[[dict[str, Any], str], dict[str, Any]],
    results_turn: Callable[[list[dict[str, Any]]], dict[str, Any]],
    turn: Callable[[Any, dict[str, Any], str], dict[str, Any] | None],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """OpenAI ``messages`` -> (system entries, turns), in order.

    ``system`` / ``developer`` text (empty text dropped) -> ``system(text)``; each run of
    consecutive ``tool`` messages -> ONE ``results_turn(results)`` turn holding
    ``tool_result(message, param)`` for each; any other message -> ``turn(role,
    message, param)`` (``None`` drops it; it raises :func:`invalid_role` for roles it
    has no place for).  ``param`` is ``messages[i]``.  Raises :class:`TranslationError`
    when ``messages`` is not a non-empty array, a message is not an object, or no turn
    is left.
    """
    if not isinstance(raw, list) or not raw:
        raise TranslationError(
            "'messages' must be a non-empty array.", param="messages", code="invalid_value"
        )
    system_out: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    results: list[dict[str, Any]] | None = None  # the open turn of tool results
    for i, msg in enumerate(raw):
        param = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise TranslationError(f"'{param}' must be an object.", param=param, code="invalid_type")
        role = msg.get("role")
        if role in ("system", "developer"):
            text = text_of(msg.get("content"), f"{param}.content")
            if text:
                system_out.append(system(text))
            continue
        if role == "tool":
            result = tool_result(msg, param)
            if results is None:
                results = []
                turns.append(results_turn(results))
            results.append(result)
            continue
        results = None
        entry = turn(role, msg, param)
        if entry is not None:
            turns.append(entry)
    if not turns:
        raise TranslationError(
            "At least one non-system message is required.", param="messages", code="invalid_value"
        )
    return system_out, turns


def content_parts(content: Any, param: str, *, strings: bool = False) -> Iterator[tuple[str, Any]]:
    """``(param of the part, part)`` for each part of a list ``content``.

    Raises :class:`TranslationError` when ``content`` is not a list or a part is not an
    object (a bare string part is allowed when ``strings``).
    """
    if not isinstance(content, list):
        raise TranslationError(f"Invalid type for '{param}'.", param=param, code="invalid_type")
    for j, part in enumerate(content):
        p = f"{param}[{j}]"
        if not isinstance(part, dict) and not (strings and isinstance(part, str)):
            raise TranslationError(f"Invalid content part '{p}'.", param=p, code="invalid_type")
        yield p, part


def image_url_of(part: dict[str, Any], param: str) -> str:
    """The URL of an ``image_url`` content part (``param`` names the part)."""
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise TranslationError(
            f"'{param}.image_url.url' is required.", param=f"{param}.image_url", code="invalid_value"
        )
    return url


def file_data_of(part: dict[str, Any]) -> tuple[str, str] | None:
    """``(mime, base64 data)`` of a ``file`` part's inline ``file_data`` (a data URL, or bare
    base64 taken as a PDF); ``None`` when the part has no inline data."""
    file = part.get("file") or {}
    file_data = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(file_data, str) or not file_data:
        return None
    return parse_data_url(file_data) or ("application/pdf", file_data)


def assistant_tool_calls(msg: dict[str, Any], param: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """``(id, name, arguments object)`` for each tool call of an assistant message.

    Raises :class:`TranslationError` for a non-function call or arguments that are not
    a JSON object.
    """
    for k, tc in enumerate(msg.get("tool_calls") or ()):
        p = f"{param}.tool_calls[{k}]"
        if not isinstance(tc, dict) or tc.get("type", "function") != "function":
            raise TranslationError(
                f"Only function tool calls are supported in '{p}'.", param=p, code="invalid_value"
            )
        fn = tc.get("function") or {}
        name = str(fn.get("name") or "")
        yield str(tc.get("id") or ""), name, parse_arguments(fn.get("arguments"), f"{p}.function.arguments")


def response_format_of(fmt: Any) -> tuple[str, dict[str, Any] | None] | None:
    """``response_format`` as ``(type, JSON schema)``: type is text, json_object or
    json_schema (the schema only for json_schema); ``None`` when absent.  Raises a 400
    for another type or a json_schema without a schema object."""
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_schema":
        spec = fmt.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise TranslationError(
                "'response_format.json_schema.schema' is required.",
                param="response_format.json_schema.schema",
                code="invalid_value",
            )
        return kind, schema
    if kind in ("text", "json_object"):
        return kind, None
    raise TranslationError(
        "Invalid value for 'response_format'.", param="response_format", code="invalid_value"
    )


def text_of(content: Any, param: str, *, strict: bool = True) -> str:
    """Flatten ``content`` to text (text / refusal parts joined with no separator)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    out: list[str] = []
    for p, part in content_parts(content, param, strings=True):
        if isinstance(part, str):
            out.append(part)
            continue
        kind = part.get("type")
        if kind == "text":
            out.append(str(part.get("text") or ""))
        elif kind == "refusal":
            out.append(str(part.get("refusal") or ""))
        elif strict:
            raise TranslationError(
                f"Content part type '{kind}' is not allowed in '{param}'.",
                param=p,
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
