"""What goes to an OpenAI-compatible target: the request body as it must be, and the usage tap.

Nothing changes in the common case (the client's bytes go as they are: the fast
path). A qualified or aliased model name, ``max_tokens`` for a reasoning model,
or usage injected into a stream that already has ``stream_options`` rewrite the
top level around the untouched raw values; a stream with no ``stream_options``
gets the usage request spliced in front, no parsing.
"""

from __future__ import annotations

from typing import Any

from fastgw.controls.usage import (
    USAGE_INJECTED,
    CaptureTap,
    inject_include_usage,
    stream_usage_path,
    usage_tap,
)
from fastgw.ingress import body as bodies
from fastgw.routing.providers import Provider


class Prepared:
    """One target's request body, the path it takes, and its usage tap."""

    __slots__ = ("body", "path_taken", "tap", "usage_path")

    def __init__(self, body: bytes, path_taken: str, usage_path: str, tap: Any) -> None:
        self.body = body
        self.path_taken = path_taken
        self.usage_path = usage_path
        self.tap = tap


def prepare(controls: Any, suffix: str, body: bytes, routing: bodies.Routing, provider: Provider,
            upstream_model: str, model_json: bytes | None) -> Prepared:
    """The body for ``provider`` (``model_json``: the upstream model to write, None to keep the client's)."""
    stream = routing.stream
    usage_path = stream_usage_path(suffix, stream, routing.include_usage, controls.inject_usage)
    inject = usage_path == USAGE_INJECTED
    rename = (suffix == "/chat/completions" and b'"max_tokens"' in body
              and bodies.needs_max_completion_tokens(provider.type, upstream_model))
    path_taken = "fast"
    if model_json is not None or rename or (inject and routing.has_stream_options):
        new = bodies.rewrite(body, model_json=model_json, rename_max_tokens=rename,
                             edit=inject_include_usage if inject else None)
        if new is not None:
            body = new
            path_taken = "rewritten"
    elif inject:
        # No stream_options at all: splice it in front, no parsing (still the fast path).
        body = bodies.splice_first_member(body, b'"stream_options":{"include_usage":true}')
    tap = usage_tap(suffix, stream, usage_path)
    if controls.capture_bodies and stream:
        tap = CaptureTap(tap, controls.config.logging.body_cap)
    return Prepared(body, path_taken, usage_path, tap)
