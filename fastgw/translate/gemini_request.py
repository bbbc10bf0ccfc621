"""OpenAI chat completion / embeddings requests -> Gemini API requests.

``build_request(body, upstream_model, *, default_max_tokens=None,
drop_unsupported=False) -> (path, headers, body_bytes)``: path
``/v1beta/models/{model}:generateContent``, or
``/v1beta/models/{model}:streamGenerateContent?alt=sse`` when ``body["stream"]``;
headers only ``content-type`` (the key header is the caller's business).

Mapping:

* ``system`` / ``developer`` messages -> ``systemInstruction.parts`` (in order).
* ``user`` -> ``role: user``; ``assistant`` -> ``role: model``.  Text parts ->
  ``{"text"}``; ``image_url`` data URLs -> ``inlineData{mimeType, data}``, other URLs
  -> ``fileData{fileUri, mimeType}`` (mime from the extension, default
  ``image/jpeg``); ``input_audio`` -> ``inlineData`` (``audio/wav`` / ``audio/mp3``);
  ``file`` parts with ``file_data`` -> ``inlineData``.
* Assistant ``tool_calls`` -> ``functionCall{name, args, id}`` parts.  A
  ``thoughtSignature`` that :mod:`fastgw.translate.gemini` embedded in the tool-call
  id (``<id>__ts__<signature>``, see there) is split off again and sent back on the
  part, as Gemini 3 requires.
* Consecutive ``tool`` messages -> ONE ``user`` content of ``functionResponse``
  parts ``{name, id, response: {"output": <text>}}``; the name comes from the
  earlier assistant tool call with that ``tool_call_id`` (unknown id -> 400).
* ``tools`` -> ``[{"functionDeclarations": [{name, description,
  parametersJsonSchema}]}]`` (full JSON Schema, so OpenAI schemas pass unchanged);
  ``tool_choice`` auto/none/required/named -> ``toolConfig.functionCallingConfig``
  mode ``AUTO`` / ``NONE`` / ``ANY`` / ``ANY`` + ``allowedFunctionNames``.
  ``parallel_tool_calls`` has no Gemini switch and is ignored.
* ``generationConfig``: ``stop`` -> ``stopSequences``, ``max_completion_tokens`` /
  ``max_tokens`` (else ``default_max_tokens``) -> ``maxOutputTokens``,
  ``temperature``, ``top_p`` -> ``topP``, ``top_k`` -> ``topK``, ``n`` ->
  ``candidateCount``, ``presence_penalty`` / ``frequency_penalty``, ``seed``,
  ``logprobs`` -> ``responseLogprobs``, ``top_logprobs`` -> ``logprobs``;
  ``response_format`` ``json_object`` -> ``responseMimeType: application/json``,
  ``json_schema`` -> that plus ``responseJsonSchema`` (JSON Schema as-is);
  ``reasoning_effort`` -> ``thinkingConfig{thinkingBudget, includeThoughts: true}``
  with none 0, minimal 128, low 1024, medium 8192, high 24576, xhigh 32768 ("none"
  sends budget 0 without ``includeThoughts``).
* ``user`` / ``safety_identifier`` are dropped (Gemini has no end-user field).
* Unsupported (400 naming the param unless ``drop_unsupported``): ``logit_bias``,
  ``audio`` / audio ``modalities``, ``prediction``, ``web_search_options``, legacy
  ``functions``, non-function tools, ``file`` parts without inline data.
* Ignored: ``stream_options``, ``store``, ``metadata``, ``service_tier``,
  ``prompt_cache_key``, ``verbosity``, ``parallel_tool_calls`` and unknown fields.

``build_embeddings_request(body, upstream_model)`` -> ``batchEmbedContents`` with one
request per input string (``dimensions`` -> ``outputDimensionality``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from .common import (
    function_tools,
    guess_mime,
    max_tokens_of,
    parse_arguments,
    parse_data_url,
    reasoning_effort_of,
    stop_list,
    text_of,
    tool_call_names,
    tool_choice_of,
    unsupported_handler,
)
from .errors import TranslationError

__all__ = ["SIGNATURE_SEP", "THINKING_BUDGETS", "build_embeddings_request", "build_request", "model_path"]

HEADERS = {"content-type": "application/json"}
THINKING_BUDGETS = {"none": 0, "minimal": 128, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768}
SIGNATURE_SEP = "__ts__"

_encode = msgspec.json.Encoder().encode
_PROVIDER = "Gemini"


def model_path(model: str) -> str:
    """``/v1beta/models/<model>`` (a leading ``models/`` in ``model`` is accepted)."""
    if model.startswith("models/"):
        model = model[7:]
    return "/v1beta/models/" + model


def build_request(
    body: dict[str, Any],
    upstream_model: str,
    *,
    default_max_tokens: int | None = None,
    drop_unsupported: bool = False,
) -> tuple[str, dict[str, str], bytes]:
    """Translate an OpenAI chat request dict; see the module docstring."""

    unsupported = unsupported_handler(_PROVIDER, drop_unsupported)

    for key in ("logit_bias", "audio", "prediction", "web_search_options", "functions", "function_call"):
        if body.get(key) is not None:
            unsupported(key)
    modalities = body.get("modalities")
    if isinstance(modalities, list) and any(m != "text" for m in modalities):
        unsupported("modalities", "only text output")

    out: dict[str, Any] = {}
    system, contents = _contents(body.get("messages"), unsupported)
    out["contents"] = contents
    if system:
        out["systemInstruction"] = {"parts": system}
    tools = body.get("tools")
    if tools:
        decls = _declarations(tools, unsupported)
        if decls:
            out["tools"] = [{"functionDeclarations": decls}]
            config = _tool_config(body.get("tool_choice"))
            if config:
                out["toolConfig"] = {"functionCallingConfig": config}
    gen = _generation_config(body, default_max_tokens, unsupported)
    if gen:
        out["generationConfig"] = gen

    path = model_path(upstream_model)
    path += ":streamGenerateContent?alt=sse" if body.get("stream") else ":generateContent"
    return path, dict(HEADERS), _encode(out)


def _generation_config(
    body: dict[str, Any], default_max_tokens: int | None, unsupported: Any
) -> dict[str, Any]:
    gen: dict[str, Any] = {}
    stops = stop_list(body.get("stop"))
    if stops:
        gen["stopSequences"] = stops
    max_tokens = max_tokens_of(body) or default_max_tokens
    if max_tokens:
        gen["maxOutputTokens"] = max_tokens
    for src, dst in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("seed", "seed"),
    ):
        if body.get(src) is not None:
            gen[dst] = body[src]
    n = body.get("n")
    if n is not None and n != 1:
        gen["candidateCount"] = n
    if body.get("logprobs"):
        gen["responseLogprobs"] = True
        if body.get("top_logprobs") is not None:
            gen["logprobs"] = body["top_logprobs"]
    fmt = body.get("response_format")
    if fmt is not None:
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind == "json_object":
            gen["responseMimeType"] = "application/json"
        elif kind == "json_schema":
            spec = fmt.get("json_schema") or {}
            schema = spec.get("schema") if isinstance(spec, dict) else None
            if not isinstance(schema, dict):
                raise TranslationError(
                    "'response_format.json_schema.schema' is required.",
                    param="response_format.json_schema.schema",
                    code="invalid_value",
                )
            gen["responseMimeType"] = "application/json"
            gen["responseJsonSchema"] = schema
        elif kind != "text":
            raise TranslationError(
                "Invalid value for 'response_format'.", param="response_format", code="invalid_value"
            )
    effort = reasoning_effort_of(body)
    if effort is not None:
        budget = THINKING_BUDGETS[effort]
        gen["thinkingConfig"] = (
            {"thinkingBudget": budget, "includeThoughts": True} if budget else {"thinkingBudget": 0}
        )
    return gen


def _inline(mime: str, data: str) -> dict[str, Any]:
    return {"inlineData": {"mimeType": mime, "data": data}}


def _user_parts(content: Any, param: str, unsupported: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise TranslationError(f"Invalid type for '{param}'.", param=param, code="invalid_type")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        p = f"{param}[{j}]"
        if not isinstance(part, dict):
            raise TranslationError(f"Invalid content part '{p}'.", param=p, code="invalid_type")
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                parts.append({"text": str(part["text"])})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str) or not url:
                raise TranslationError(
                    f"'{p}.image_url.url' is required.", param=f"{p}.image_url", code="invalid_value"
                )
            data = parse_data_url(url)
            if data is not None:
                parts.append(_inline(*data))
            else:
                parts.append({"fileData": {"fileUri": url, "mimeType": guess_mime(url)}})
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            fmt = str(audio.get("format") or "wav")
            parts.append(
                _inline("audio/mp3" if fmt == "mp3" else f"audio/{fmt}", str(audio.get("data") or ""))
            )
        elif kind == "file":
            file = part.get("file") or {}
            file_data = file.get("file_data") if isinstance(file, dict) else None
            if isinstance(file_data, str) and file_data:
                parsed = parse_data_url(file_data)
                parts.append(_inline(*(parsed or ("application/pdf", file_data))))
            else:
                unsupported(p, "file parts need inline file_data")
        else:
            unsupported(p, f"content part type {kind!r}")
    return parts


def _model_parts(msg: dict[str, Any], param: str) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    text = text_of(msg.get("content"), f"{param}.content")
    if text:
        parts.append({"text": text})
    for k, tc in enumerate(msg.get("tool_calls") or ()):
        p = f"{param}.tool_calls[{k}]"
        if not isinstance(tc, dict) or tc.get("type", "function") != "function":
            raise TranslationError(
                f"Only function tool calls are supported in '{p}'.", param=p, code="invalid_value"
            )
        fn = tc.get("function") or {}
        call: dict[str, Any] = {
            "name": str(fn.get("name") or ""),
            "args": parse_arguments(fn.get("arguments"), f"{p}.function.arguments"),
        }
        call_id, _, signature = str(tc.get("id") or "").partition(SIGNATURE_SEP)
        if call_id:
            call["id"] = call_id
        part: dict[str, Any] = {"functionCall": call}
        if signature:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _contents(raw: Any, unsupported: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if not isinstance(raw, list) or not raw:
        raise TranslationError(
            "'messages' must be a non-empty array.", param="messages", code="invalid_value"
        )
    names = tool_call_names(raw)
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    responses: list[dict[str, Any]] | None = None  # the open user content of functionResponses
    for i, msg in enumerate(raw):
        param = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise TranslationError(f"'{param}' must be an object.", param=param, code="invalid_type")
        role = msg.get("role")
        if role in ("system", "developer"):
            text = text_of(msg.get("content"), f"{param}.content")
            if text:
                system.append({"text": text})
            continue
        if role == "tool":
            full_id = str(msg.get("tool_call_id") or "")
            if full_id not in names:
                raise TranslationError(
                    f"'{param}.tool_call_id' does not match any earlier assistant tool call.",
                    param=f"{param}.tool_call_id",
                    code="invalid_value",
                )
            call_id = full_id.partition(SIGNATURE_SEP)[0]
            response = {
                "name": names[full_id],
                "response": {"output": text_of(msg.get("content"), f"{param}.content")},
            }
            if call_id:
                response["id"] = call_id
            if responses is None:
                responses = []
                contents.append({"role": "user", "parts": responses})
            responses.append({"functionResponse": response})
            continue
        responses = None
        if role == "user":
            parts = _user_parts(msg.get("content"), f"{param}.content", unsupported)
            contents.append({"role": "user", "parts": parts or [{"text": ""}]})
        elif role == "assistant":
            parts = _model_parts(msg, param)
            if parts:
                contents.append({"role": "model", "parts": parts})
        else:
            raise TranslationError(
                f"Invalid role {role!r} in '{param}'.", param=f"{param}.role", code="invalid_value"
            )
    if not contents:
        raise TranslationError(
            "At least one non-system message is required.", param="messages", code="invalid_value"
        )
    return system, contents


def _declarations(tools: Any, unsupported: Any) -> list[dict[str, Any]]:
    decls: list[dict[str, Any]] = []
    for name, fn in function_tools(tools, unsupported):
        decl: dict[str, Any] = {"name": name}
        if fn.get("description"):
            decl["description"] = fn["description"]
        if fn.get("parameters"):
            decl["parametersJsonSchema"] = fn["parameters"]
        decls.append(decl)
    return decls


def _tool_config(choice: Any) -> dict[str, Any] | None:
    parsed = tool_choice_of(choice)
    if parsed is None:
        return None
    mode, name = parsed
    if mode == "function":
        return {"mode": "ANY", "allowedFunctionNames": [name]}
    return {"mode": {"auto": "AUTO", "none": "NONE", "required": "ANY"}[mode]}


def build_embeddings_request(body: dict[str, Any], upstream_model: str) -> tuple[str, dict[str, str], bytes]:
    """OpenAI embeddings request -> ``batchEmbedContents`` (one request per input string)."""
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(x, str) for x in inputs):
        raise TranslationError(
            "'input' must be a string or a non-empty array of strings for this model (token arrays are not supported).",
            param="input",
            code="invalid_value",
        )
    dims = body.get("dimensions")
    model = upstream_model[7:] if upstream_model.startswith("models/") else upstream_model
    requests = []
    for text in inputs:
        req: dict[str, Any] = {"model": "models/" + model, "content": {"parts": [{"text": text}]}}
        if dims is not None:
            req["outputDimensionality"] = dims
        requests.append(req)
    return model_path(model) + ":batchEmbedContents", dict(HEADERS), _encode({"requests": requests})
