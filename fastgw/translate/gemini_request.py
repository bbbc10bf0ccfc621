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
    assistant_tool_calls,
    content_parts,
    file_data_of,
    function_tools,
    guess_mime,
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
_UNSUPPORTED_FIELDS = ("logit_bias", "audio", "prediction", "web_search_options", "functions", "function_call")


def _model_id(model: str) -> str:
    """``model`` without a leading ``models/``."""
    return model[7:] if model.startswith("models/") else model


def model_path(model: str) -> str:
    """``/v1beta/models/<model>`` (a leading ``models/`` in ``model`` is accepted)."""
    return "/v1beta/models/" + _model_id(model)


def build_request(
    body: dict[str, Any],
    upstream_model: str,
    *,
    default_max_tokens: int | None = None,
    drop_unsupported: bool = False,
) -> tuple[str, dict[str, str], bytes]:
    """Translate an OpenAI chat request dict; see the module docstring."""

    unsupported = unsupported_handler(_PROVIDER, drop_unsupported)

    reject_fields(body, unsupported, _UNSUPPORTED_FIELDS)

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
    fmt = response_format_of(body.get("response_format"))
    if fmt is not None and fmt[0] != "text":
        gen["responseMimeType"] = "application/json"
        if fmt[1] is not None:
            gen["responseJsonSchema"] = fmt[1]
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
    parts: list[dict[str, Any]] = []
    for p, part in content_parts(content, param):
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                parts.append({"text": str(part["text"])})
        elif kind == "image_url":
            url = image_url_of(part, p)
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
            inline = file_data_of(part)
            if inline is not None:
                parts.append(_inline(*inline))
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
    for full_id, name, args in assistant_tool_calls(msg, param):
        call: dict[str, Any] = {"name": name, "args": args}
        call_id, _, signature = full_id.partition(SIGNATURE_SEP)
        if call_id:
            call["id"] = call_id
        part: dict[str, Any] = {"functionCall": call}
        if signature:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _contents(raw: Any, unsupported: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    names = tool_call_names(raw) if isinstance(raw, list) else {}

    def tool_result(msg: dict[str, Any], param: str) -> dict[str, Any]:
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
        return {"functionResponse": response}

    def turn(role: Any, msg: dict[str, Any], param: str) -> dict[str, Any] | None:
        if role == "user":
            parts = _user_parts(msg.get("content"), f"{param}.content", unsupported)
            return {"role": "user", "parts": parts or [{"text": ""}]}
        if role == "assistant":
            parts = _model_parts(msg, param)
            return {"role": "model", "parts": parts} if parts else None
        raise invalid_role(role, param)

    return map_messages(
        raw,
        system=lambda text: {"text": text},
        tool_result=tool_result,
        results_turn=lambda results: {"role": "user", "parts": results},
        turn=turn,
    )


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
    model = _model_id(upstream_model)
    requests = []
    for text in inputs:
        req: dict[str, Any] = {"model": "models/" + model, "content": {"parts": [{"text": text}]}}
        if dims is not None:
            req["outputDimensionality"] = dims
        requests.append(req)
    return model_path(model) + ":batchEmbedContents", dict(HEADERS), _encode({"requests": requests})
