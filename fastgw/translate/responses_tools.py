"""Responses API tools seen from chat completions: namespaces flattened, hosted tools named.

Codex sends ``namespace`` tools (a named group of function tools).  A chat request has only
flat function tools, so :func:`flat_tools` lists every function tool with its namespace, and
:func:`namespace_names` gives each namespaced one its chat-side name: its own name, or
``<namespace>__<name>`` when that name is also used elsewhere.  :func:`chat_name` maps a
``function_call`` input item (``name`` + ``namespace``) to that chat-side name, and
:func:`tool_call_item_name` maps a chat tool call's name back to the ``name`` and
``namespace`` the client sent.  :data:`HOSTED_TOOLS` are the tool types that run inside
OpenAI's service (a translated target cannot run them).
"""

from __future__ import annotations

from typing import Any

__all__ = ["HOSTED_TOOLS", "NAMESPACE_SEP", "chat_name", "flat_tools", "namespace_names", "tool_call_item_name"]

HOSTED_TOOLS = frozenset({"web_search", "web_search_preview", "file_search", "code_interpreter",
                           "image_generation", "computer_use_preview", "mcp", "local_shell"})
NAMESPACE_SEP = "__"


def flat_tools(tools: Any) -> list[tuple[dict[str, Any], str | None]]:
    """Every function tool, namespaces flattened: (tool, its namespace or None)."""
    out: list[tuple[dict[str, Any], str | None]] = []
    for tool in tools if isinstance(tools, list) else ():
        if isinstance(tool, dict) and tool.get("type") == "namespace":
            ns = str(tool.get("name") or "")
            out += [(t, ns) for t in tool.get("tools") or () if isinstance(t, dict) and t.get("type") == "function"]
        elif isinstance(tool, dict) and tool.get("type") == "function":
            out.append((tool, None))
    return out


def namespace_names(request: dict[str, Any] | None) -> dict[str, tuple[str, str]]:
    """The chat-side name of each function tool inside a namespace -> (namespace, its name)."""
    flat = flat_tools((request or {}).get("tools"))
    plain = [str(t.get("name") or "") for t, ns in flat]
    out: dict[str, tuple[str, str]] = {}
    for tool, ns in flat:
        if ns is None:
            continue
        name = str(tool.get("name") or "")
        out[name if plain.count(name) == 1 else f"{ns}{NAMESPACE_SEP}{name}"] = (ns, name)
    return out


def chat_name(names: dict[str, tuple[str, str]], namespace: Any, name: str) -> str:
    """The chat-side name of a call to ``name`` in ``namespace`` (as :func:`namespace_names`)."""
    if not namespace:
        return name
    for flat, (ns, original) in names.items():
        if ns == namespace and original == name:
            return flat
    return name


def tool_call_item_name(names: dict[str, tuple[str, str]], chat_name: str) -> dict[str, str]:
    """``name`` (and ``namespace``) of a ``function_call`` item for a chat tool call's name."""
    if chat_name in names:
        ns, name = names[chat_name]
        return {"name": name, "namespace": ns}
    return {"name": chat_name}
