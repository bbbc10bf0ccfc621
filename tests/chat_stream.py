"""Test helpers: decode and accumulate OpenAI chat chunk streams produced by the translators."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


def events(sse: bytes) -> list[Any]:
    """Decoded ``data:`` payloads of an OpenAI-style SSE body (``"[DONE]"`` kept as a string)."""
    out: list[Any] = []
    for block in sse.decode().split("\n\n"):
        if not block:
            continue
        assert block.startswith("data: "), block
        payload = block[6:]
        out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


@dataclass
class Choice:
    text: str = ""
    reasoning: str = ""
    tools: dict[int, dict[str, str]] = field(default_factory=dict)
    finish_reason: str | None = None
    roles: int = 0


@dataclass
class Stream:
    choices: dict[int, Choice] = field(default_factory=dict)
    usage: dict[str, Any] | None = None
    done: bool = False
    error: dict[str, Any] | None = None
    chunks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def c0(self) -> Choice:
        return self.choices[0]

    def tool_calls(self, index: int = 0) -> list[tuple[str, Any]]:
        """(name, parsed arguments) of each tool call of a choice, in index order."""
        out = []
        for _, tc in sorted(self.choices[index].tools.items()):
            out.append((tc["name"], json.loads(tc["arguments"]) if tc["arguments"] else None))
        return out


def accumulate(sse: bytes) -> Stream:
    """Fold a chunk stream the way an OpenAI client does, checking framing invariants."""
    s = Stream()
    for ev in events(sse):
        assert not s.done, "nothing may follow [DONE]"
        assert s.error is None, "nothing may follow an error event"
        if ev == "[DONE]":
            s.done = True
            continue
        if "error" in ev:
            s.error = ev["error"]
            continue
        s.chunks.append(ev)
        assert ev["object"] == "chat.completion.chunk"
        if not ev["choices"]:
            assert ev.get("usage"), "a choices:[] chunk must carry usage"
            s.usage = ev["usage"]
            continue
        for ch in ev["choices"]:
            c = s.choices.setdefault(ch["index"], Choice())
            assert c.finish_reason is None, "no delta after the finish chunk"
            d = ch["delta"]
            if d.get("role"):
                c.roles += 1
            c.text += d.get("content") or ""
            c.reasoning += d.get("reasoning_content") or ""
            for tc in d.get("tool_calls") or ():
                if "id" in tc:
                    assert tc["index"] not in c.tools
                    c.tools[tc["index"]] = {"id": tc["id"], "name": tc["function"]["name"], "arguments": ""}
                c.tools[tc["index"]]["arguments"] += tc["function"].get("arguments") or ""
            if ch["finish_reason"]:
                c.finish_reason = ch["finish_reason"]
    ids = {c["id"] for c in s.chunks}
    assert len(ids) <= 1, "every chunk has the same id"
    for c in s.choices.values():
        assert c.roles == 1, "exactly one role chunk per choice"
    return s


def normalized(sse: bytes) -> list[Any]:
    """Decoded payloads minus the random/time-dependent fields (``id``, ``created``, tool ids)."""
    out = []
    for ev in events(sse):
        if isinstance(ev, dict):
            ev.pop("id", None)
            ev.pop("created", None)
            for ch in ev.get("choices") or ():
                for tc in ch["delta"].get("tool_calls") or ():
                    if "id" in tc:
                        tc["id"] = "<id>"
        out.append(ev)
    return out
