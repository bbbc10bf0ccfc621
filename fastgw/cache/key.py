"""The cache key: a tenant, an endpoint and the normalised request.

Normalising decodes the body and encodes it again with sorted keys and no white
space, so key order and formatting do not matter; ``stream_options`` is dropped
(a cached stream is replayed in whatever shape the client asks for) and
everything else (model, messages, tools, sampling parameters, ``stream``) is kept.
The key is the SHA-256 of tenant, endpoint and that text: one tenant never reads
another's answers unless ``cache.namespace`` puts them in one namespace.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder(order="sorted").encode
DROPPED = ("stream_options",)


def normalise(body: bytes) -> bytes | None:
    """The request in canonical JSON, or None when it is not a JSON object."""
    try:
        doc: Any = _decode(body)
    except msgspec.DecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    for name in DROPPED:
        doc.pop(name, None)
    if doc.get("stream") is False:
        del doc["stream"]
    return _encode(doc)


def cache_key(tenant: str, endpoint: str, normalised: bytes) -> str:
    h = hashlib.sha256()
    for part in (tenant.encode(), endpoint.encode()):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    h.update(normalised)
    return h.hexdigest()
