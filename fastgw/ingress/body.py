"""The request body: read it within a limit, decode only what routing needs,
and rewrite only what must change.

* :func:`read_body` collects the ASGI body, refusing (413) as soon as the
  declared or received size passes the limit, without reading the rest.
* :func:`decode_routing` decodes ``model``, ``stream`` and ``stream_options``
  with one :class:`msgspec.json.Decoder` built at import; ``messages`` and
  every other field are skipped by the parser, never built as objects.
* :func:`rewrite` decodes the top level as ``dict[str, msgspec.Raw]`` (every
  value stays raw bytes), applies the changes, and encodes the object around
  the untouched raw values.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from fastgw.errors import GatewayError, bad_request
from fastgw.exchange import ClientGone, Exchange, header
from fastgw.tokens import OutputCaps

MAX_MODEL_LENGTH = 512


class RoutingFields(OutputCaps):
    """The only fields the fast path decodes (the output caps feed a token estimate when a
    limit or budget needs one, without decoding the body again)."""

    model: Any = msgspec.UNSET
    stream: Any = None
    stream_options: Any = msgspec.UNSET


_routing_decoder = msgspec.json.Decoder(RoutingFields)
_raw_object_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


class Routing:
    __slots__ = ("fields", "has_stream_options", "include_usage", "model", "stream")

    def __init__(self, model: str, stream: bool, include_usage: bool, has_stream_options: bool = False,
                 fields: RoutingFields | None = None) -> None:
        self.model = model
        self.stream = stream
        self.include_usage = include_usage
        # The body has a top-level "stream_options" member (even null).
        self.has_stream_options = has_stream_options
        self.fields = fields  # as decoded


def decode_routing(body: bytes) -> Routing:
    """Decode the routing fields; a 400 naming the param for anything malformed."""
    try:
        fields = _routing_decoder.decode(body)
    except RecursionError:
        raise too_deep() from None
    except UnicodeDecodeError:
        raise not_utf8() from None
    except msgspec.ValidationError as exc:
        # Only "Expected `object`" can fail here: the fields themselves are Any.
        raise bad_request(f"The request body must be a JSON object ({_short(exc)}).") from None
    except msgspec.DecodeError as exc:
        raise bad_request(f"The request body is not valid JSON: {_short(exc)}.") from None
    model = fields.model
    if model is msgspec.UNSET or model is None:
        raise bad_request("You must provide a model parameter.", param="model", code="missing_required_parameter")
    if not isinstance(model, str):
        raise bad_request("The 'model' parameter must be a string.", param="model", code="invalid_type")
    if not model or len(model) > MAX_MODEL_LENGTH:
        raise bad_request(
            f"The 'model' parameter must be 1 to {MAX_MODEL_LENGTH} characters long.", param="model", code="invalid_value"
        )
    stream = fields.stream
    if stream is None:
        stream = False
    elif not isinstance(stream, bool):
        raise bad_request("The 'stream' parameter must be a boolean.", param="stream", code="invalid_type")
    include_usage = False
    options = fields.stream_options
    present = options is not msgspec.UNSET
    if present and options is not None:
        if not isinstance(options, dict):
            raise bad_request(
                "The 'stream_options' parameter must be an object.", param="stream_options", code="invalid_type"
            )
        value = options.get("include_usage")
        if value is not None and not isinstance(value, bool):
            raise bad_request(
                "'stream_options.include_usage' must be a boolean.",
                param="stream_options.include_usage",
                code="invalid_type",
            )
        include_usage = bool(value)
    return Routing(model, stream, include_usage, present, fields)


def too_deep() -> GatewayError:
    return bad_request("The request body is nested too deeply.", code="invalid_json")


def not_utf8() -> GatewayError:
    return bad_request("The request body is not valid UTF-8.", code="invalid_json")


def _short(exc: Exception) -> str:
    text = str(exc)
    return text[:1].lower() + text[1:200]


def decode_raw_object(body: bytes) -> dict[str, msgspec.Raw]:
    """The top-level object with every value kept as raw JSON bytes."""
    try:
        return _raw_object_decoder.decode(body)
    except RecursionError:
        raise too_deep() from None
    except UnicodeDecodeError:
        raise not_utf8() from None
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise bad_request(f"The request body is not a valid JSON object: {_short(exc)}.") from None


# Models whose OpenAI API takes max_completion_tokens and refuses max_tokens.
_REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")


def decode_object(body: bytes) -> dict[str, Any]:
    """The whole body as a JSON object (for translation); a 400 when it is not one."""
    try:
        request = _decoder.decode(body)
    except RecursionError:
        raise too_deep() from None
    except UnicodeDecodeError:
        raise not_utf8() from None
    except msgspec.DecodeError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(request, dict):
        raise bad_request("The request body must be a JSON object.")
    return request


def needs_max_completion_tokens(provider_type: str, upstream_model: str) -> bool:
    return provider_type in ("openai", "azure") and upstream_model.startswith(_REASONING_PREFIXES)


def rewrite(
    body: bytes,
    *,
    model_json: bytes | None,
    rename_max_tokens: bool,
    edit: Callable[[dict[str, msgspec.Raw]], None] | None = None,
) -> bytes | None:
    """Apply the needed changes to the top level, keeping every other value raw.

    Returns None when, after looking, nothing had to change (the caller then
    sends the original bytes).
    """
    fields = decode_raw_object(body)
    changed = False
    if model_json is not None:
        fields["model"] = msgspec.Raw(model_json)
        changed = True
    if rename_max_tokens and "max_tokens" in fields:
        value = fields.pop("max_tokens")
        fields.setdefault("max_completion_tokens", value)
        changed = True
    if edit is not None:
        edit(fields)
        changed = True
    return _encoder.encode(fields) if changed else None


def splice_first_member(body: bytes, member: bytes) -> bytes:
    """Insert ``member`` (``"name":value``) as the first member of the top-level object.

    Only for a body already decoded as an object with at least one member (it has
    ``model``) that lacks ``name``: the rest of the bytes are untouched, unparsed.
    """
    i = body.index(b"{") + 1
    return body[:i] + member + b"," + body[i:]


ReceiveCallable = Callable[[], Awaitable[dict[str, Any]]]


async def read_body(scope: dict[str, Any], receive: ReceiveCallable, limit: int,
                    timeout: float | None = None) -> bytes:
    """The whole request body, or a 413 as soon as it passes ``limit`` bytes, or a 408 when
    it has not arrived within ``timeout`` seconds."""
    if timeout is None:
        return await _read_body(scope, receive, limit)
    try:
        async with asyncio.timeout(timeout):
            return await _read_body(scope, receive, limit)
    except TimeoutError:
        from fastgw.admission.slowclient import body_deadline_error

        raise body_deadline_error(timeout) from None


async def read_admitted_body(ex: Exchange, limit: int, timeout: float | None) -> bytes:
    """:func:`read_body` for an admitted exchange, whose body deadline the worker's send watch
    enforces (see :mod:`fastgw.admission.slowclient`); without a watch, as :func:`read_body`."""
    from fastgw.admission.slowclient import WatchedSend, body_deadline_error

    watch = ex.send
    if not isinstance(watch, WatchedSend) or not watch.body_deadline:
        return await read_body(ex.scope, ex.receive, limit, timeout)
    try:
        return await _read_body(ex.scope, ex.receive, limit)
    except asyncio.CancelledError:
        if not watch.body_expired:
            raise
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        raise body_deadline_error(timeout or 0.0) from None
    finally:
        watch.body_deadline = 0.0


async def _read_body(scope: dict[str, Any], receive: ReceiveCallable, limit: int) -> bytes:
    value = header(scope, b"content-length")
    if value is not None:
        try:
            declared = int(value)
        except ValueError:
            raise bad_request("Invalid Content-Length header.") from None
        if declared > limit:
            raise too_large(limit)
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise too_large(limit)
        return body
    parts = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        parts.append(chunk)
    return b"".join(parts)




def too_large(limit: int) -> GatewayError:
    return GatewayError(
        413,
        f"The request body is larger than the limit of {limit} bytes.",
        type="invalid_request_error",
        code="request_too_large",
    )
