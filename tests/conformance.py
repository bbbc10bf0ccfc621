"""Access to the recorded provider traffic in ``shared/conformance`` (read in place).

The corpus is NOT part of this repository: it lives beside the checkout
(``<repo>/../shared/conformance``) or wherever ``FASTGW_CONFORMANCE_DIR`` points.
Tests must call :func:`require` (or check :func:`conformance_dir`) and skip when it
is absent.  Never copy these files into the repo.

* :func:`conformance_dir` -> the corpus directory, or ``None`` when absent.
* :func:`manifest` -> the manifest entries (``[]`` when absent).
* :func:`entries` -> manifest entries filtered by provider / api / stream.
* :func:`read` -> bytes of one corpus file; :func:`response_file` -> the entry's
  response file path (``.sse``, ``.chunks.jsonl``, ``.json``, JSON-array stream).
* :func:`replay_bytes` -> the response body as the provider sent it on the wire
  (``.chunks.jsonl`` re-framed the way the README prescribes per provider).
* :func:`load_spec_schema` -> one component schema of the OpenAI OpenAPI subset as
  a self-contained JSON Schema (2020-12): every ``#/components/schemas/X`` ref is
  rewritten to ``#/$defs/X`` and all components are attached under ``$defs``.
  OpenAPI 3.0's ``nullable: true`` (still used in places by the 3.1 document, e.g.
  ``choices[].logprobs`` and ``usage`` of the chunk schema) is rewritten to
  ``anyOf [schema, null]`` so that real OpenAI payloads (``"logprobs": null``) pass.
* :func:`validator` -> a cached ``Draft202012Validator`` for such a schema;
  :func:`response_event_validator` -> the one for a Responses stream event type.
"""

from __future__ import annotations

import copy
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

__all__ = [
    "conformance_dir",
    "entries",
    "load_spec_schema",
    "manifest",
    "read",
    "replay_bytes",
    "require",
    "response_event_validator",
    "response_file",
    "validator",
]

_REPO = Path(__file__).resolve().parent.parent
SPECS = {
    "chat-embeddings": "spec/openai-openapi.chat-embeddings.subset.yaml",
    "responses": "spec/openai-openapi.responses.subset.yaml",
}


def conformance_dir() -> Path | None:
    """The corpus directory (``$FASTGW_CONFORMANCE_DIR`` or ``<repo>/../shared/conformance``)."""
    env = os.environ.get("FASTGW_CONFORMANCE_DIR")
    path = Path(env) if env else _REPO.parent / "shared" / "conformance"
    return path if (path / "manifest.json").is_file() else None


def require() -> Path:
    """The corpus directory, or ``pytest.skip`` when it is absent."""
    path = conformance_dir()
    if path is None:
        import pytest

        pytest.skip("conformance corpus not found (set FASTGW_CONFORMANCE_DIR)")
    return path


@cache
def _manifest() -> tuple[dict[str, Any], ...]:
    path = conformance_dir()
    if path is None:
        return ()
    return tuple(json.loads((path / "manifest.json").read_text()))


def manifest() -> list[dict[str, Any]]:
    """All manifest entries (``[]`` when the corpus is absent)."""
    return list(_manifest())


def entries(
    provider: str | None = None, api: str | None = None, stream: bool | None = None
) -> list[dict[str, Any]]:
    """Manifest entries matching every given filter."""
    return [
        e
        for e in _manifest()
        if (provider is None or e["provider"] == provider)
        and (api is None or e["api"] == api)
        and (stream is None or e["stream"] == stream)
    ]


def read(relative: str) -> bytes:
    """Bytes of one corpus file (path relative to the corpus directory)."""
    return (require() / relative).read_bytes()


_RESPONSE_SUFFIXES = (".response.sse", ".chunks.jsonl", ".response.json-array-stream.txt", ".response.json")


def response_file(entry: dict[str, Any]) -> str:
    """The entry's response file (relative path)."""
    for suffix in _RESPONSE_SUFFIXES:
        for f in entry["files"]:
            if f.endswith(suffix):
                return f
    raise LookupError(f"{entry['id']}: no response file")


def request_body(entry: dict[str, Any]) -> dict[str, Any] | None:
    """The recorded request body, when the corpus has one."""
    for f in entry["files"]:
        if f.endswith(".request.json"):
            return json.loads(read(f))["body"]
    return None


def replay_bytes(entry: dict[str, Any]) -> bytes:
    """The response body as sent on the wire (re-framing ``.chunks.jsonl`` per the README)."""
    name = response_file(entry)
    raw = read(name)
    if not name.endswith(".chunks.jsonl"):
        return raw
    lines = [line for line in raw.splitlines() if line.strip()]
    provider, api = entry["provider"], entry["api"]
    if provider == "gemini":
        return b"".join(b"data: " + line + b"\r\n\r\n" for line in lines)
    if provider == "anthropic" or api == "responses":
        out = []
        for line in lines:
            kind = json.loads(line)["type"].encode()
            out.append(b"event: " + kind + b"\ndata: " + line + b"\n\n")
        return b"".join(out)
    return b"".join(b"data: " + line + b"\n\n" for line in lines) + b"data: [DONE]\n\n"


def _fix(node: Any) -> Any:
    if isinstance(node, dict):
        out = {
            k: _fix(v)
            for k, v in node.items()
            if not (k == "nullable" and isinstance(v, bool))
            and not (k == "discriminator" and isinstance(v, dict) and "propertyName" in v)
        }
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            out["$ref"] = "#/$defs/" + ref[len("#/components/schemas/") :]
        if node.get("nullable") is True:
            return {"anyOf": [out, {"type": "null"}]}
        return out
    if isinstance(node, list):
        return [_fix(v) for v in node]
    return node


@cache
def _defs(spec: str) -> dict[str, Any]:
    import yaml

    doc = yaml.safe_load((require() / SPECS[spec]).read_text())
    return _fix(doc["components"]["schemas"])


def load_spec_schema(name: str, spec: str = "chat-embeddings") -> dict[str, Any]:
    """Component schema ``name`` of ``spec`` ("chat-embeddings" or "responses"), self-contained."""
    defs = _defs(spec)
    if name not in defs:
        raise KeyError(f"{name} is not a component schema of the {spec} spec subset")
    schema = copy.deepcopy(defs[name])
    schema["$defs"] = defs
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


@cache
def validator(name: str, spec: str = "chat-embeddings") -> Any:
    """A cached ``jsonschema.Draft202012Validator`` for :func:`load_spec_schema`."""
    from jsonschema import Draft202012Validator

    return Draft202012Validator(load_spec_schema(name, spec))


@cache
def _event_schemas() -> dict[str, str]:
    defs = _defs("responses")
    out: dict[str, str] = {}
    for ref in defs["ResponseStreamEvent"]["anyOf"]:
        name = ref["$ref"].rsplit("/", 1)[-1]
        for kind in defs[name].get("properties", {}).get("type", {}).get("enum", ()):
            out[kind] = name
    return out


def response_event_validator(event_type: str) -> Any:
    """The validator of the specific Responses stream event schema for ``event_type``
    (sharper errors than the ``ResponseStreamEvent`` union)."""
    return validator(_event_schemas()[event_type], "responses")
