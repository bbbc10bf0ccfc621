"""The OpenAI Responses API stream for a script of steps (text, tool calls), in OpenAI's exact events.

:func:`responses_sse` is the scripted counterpart of :func:`bench.wire.openai_responses` (which
writes the mock's fixed text answer): ``response.created``, ``response.in_progress``, then per
step an output item (``message`` with ``output_text`` deltas, or ``function_call`` with
``function_call_arguments`` deltas) from ``output_item.added`` to ``output_item.done``, then
``response.completed`` with every item and the usage. Steps are the ones of :mod:`bench.wire`
(``("text", str)``, ``("tool", name, args)``); thinking steps are left out (OpenAI sends only an
encrypted reasoning item, which no client reads).
"""

from __future__ import annotations

from typing import Any

from bench.wire import Step, _c, _full, _pieces, _response_obj, _sse_event


def responses_sse(script: list[Step], *, model: str = "gpt-5", piece: int = 8) -> bytes:
    """A ``stream: true`` Responses body for ``script``."""
    seq = 0

    def ev(name: str, payload: dict[str, Any]) -> bytes:
        nonlocal seq
        seq += 1
        return _sse_event(name, {"type": name, "sequence_number": seq - 1, **payload})

    rid = "resp_scripted"
    running = _response_obj(rid, model, "in_progress", [], None)
    out = [ev("response.created", {"response": running}), ev("response.in_progress", {"response": running})]
    items: list[dict[str, Any]] = []
    for step in (s for s in script if s[0] in ("text", "tool")):
        index = len(items)
        if step[0] == "text":
            text = _full(step[1])
            iid = f"msg_scripted{index}"
            ids = {"item_id": iid, "output_index": index, "content_index": 0}
            part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
            item = {"id": iid, "type": "message", "status": "completed", "content": [part], "role": "assistant"}
            out.append(ev("response.output_item.added", {"output_index": index, "item": {
                **item, "status": "in_progress", "content": []}}))
            out.append(ev("response.content_part.added", {**ids, "part": {**part, "text": ""}}))
            out += [ev("response.output_text.delta", {**ids, "delta": p, "logprobs": []})
                    for p in _pieces(step[1], piece)]
            out.append(ev("response.output_text.done", {**ids, "text": text, "logprobs": []}))
            out.append(ev("response.content_part.done", {**ids, "part": part}))
        else:
            iid = f"fc_scripted{index}"
            args = _c(step[2]) if step[2] else "{}"
            item = {"id": iid, "type": "function_call", "status": "completed", "arguments": args,
                    "call_id": f"call_scripted{index}", "name": step[1]}
            out.append(ev("response.output_item.added", {"output_index": index, "item": {
                **item, "status": "in_progress", "arguments": ""}}))
            out += [ev("response.function_call_arguments.delta", {"item_id": iid, "output_index": index, "delta": p})
                    for p in _pieces(args, piece)]
            out.append(ev("response.function_call_arguments.done", {"item_id": iid, "output_index": index,
                                                                    "arguments": args}))
        out.append(ev("response.output_item.done", {"output_index": index, "item": item}))
        items.append(item)
    usage = {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 5,
             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 17}
    out.append(ev("response.completed", {"response": _response_obj(rid, model, "completed", items, usage)}))
    return b"".join(out)
