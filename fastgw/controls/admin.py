"""The admin API (``/admin/...``): keys, usage summaries and the request log, for the master key.

Contract: the core checks the master key (``Authorization: Bearer <master_key>``) BEFORE
calling :func:`handle`; this module does no authentication. ``handle`` returns
``(status, json_bytes)`` and raises ``GatewayError`` (OpenAI envelope) for client errors
(400 bad input, 404 unknown route or id, 405 wrong method).

Routes:

* ``POST   /admin/keys`` - body :class:`CreateKey`; 201 with the key record and
  ``"key": "<plaintext>"`` (shown this once only).
* ``GET    /admin/keys`` - ``{"data": [record...]}`` (no plaintext, no hash).
* ``GET    /admin/keys/{id}`` - one record.
* ``DELETE /admin/keys/{id}`` - revoke (id or unique display prefix).
* ``GET    /admin/usage?group_by=key|model|provider|day&since=&until=`` - summaries;
  ``since``/``until`` are unix seconds or ``YYYY-MM-DD`` (UTC).
* ``GET    /admin/logs?limit=&cursor=&model=&key=&status=&provider=&since=&until=`` -
  newest first; ``next_cursor`` is null on the last page.
* ``GET    /admin/logs/{request_id}`` - one entry with bodies (audit) and ``thread``.
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

import msgspec

from fastgw.controls import reqlog
from fastgw.controls.keys import PERIODS, KeyManager, KeyRecord
from fastgw.controls.reqlog import RequestLogger
from fastgw.controls.store import Store
from fastgw.errors import GatewayError, bad_request


@dataclass
class AdminContext:
    keys: KeyManager
    store: Store
    logger: RequestLogger | None = None


class CreateKey(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    models: list[str] = []
    budget_usd: float | None = None
    budget_period: str | None = None
    expires_at: float | None = None
    expires_in: str | float | None = None  # "30d", "12h", or seconds
    metadata: dict[str, Any] = {}
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    concurrency_limit: int | None = None


_DUR = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(v: str | float) -> float:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"45s"``, ``"2w"`` or a number of seconds."""
    if isinstance(v, int | float):
        return float(v)
    m = _DUR.match(v)
    if not m:
        raise ValueError(f"bad duration {v!r} (use e.g. 30d, 12h, 90m, 3600)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_time(v: str | None) -> float | None:
    if v is None or v == "":
        return None
    try:
        return float(v)
    except ValueError:
        pass
    try:
        return float(calendar.timegm(time.strptime(v, "%Y-%m-%d")))
    except ValueError:
        raise bad_request(f"bad time {v!r}: use unix seconds or YYYY-MM-DD") from None


_enc = msgspec.json.Encoder()


def key_json(rec: KeyRecord, spend: float | None = None) -> dict[str, Any]:
    d = msgspec.structs.asdict(rec)
    if spend is not None:
        d["spend_usd"] = spend
    return d


def _ok(obj: Any, status: int = 200) -> tuple[int, bytes]:
    return status, _enc.encode(obj)


def _not_found(what: str) -> GatewayError:
    return GatewayError(404, f"{what} not found", type="not_found_error", code="not_found")


def _one(q: dict[str, list[str]], name: str) -> str | None:
    v = q.get(name)
    return v[-1] if v else None


async def handle(method: str, path: str, query: str, body: bytes, ctx: AdminContext) -> tuple[int, bytes]:
    """Serve one admin request (see the module docstring)."""
    parts = [unquote(p) for p in path.strip("/").split("/")]
    if len(parts) < 2 or parts[0] != "admin":
        raise _not_found("admin route")
    q = parse_qs(query, keep_blank_values=False)
    section, rest = parts[1], parts[2:]
    method = method.upper()
    if section == "keys":
        return await _keys(method, rest, body, ctx)
    if section == "usage" and not rest:
        _method(method, "GET")
        try:
            rows = await reqlog.usage_summary(
                ctx.store,
                _one(q, "group_by") or "key",
                parse_time(_one(q, "since")),
                parse_time(_one(q, "until")),
            )
        except ValueError as e:
            raise bad_request(str(e), param="group_by") from None
        return _ok({"group_by": _one(q, "group_by") or "key", "data": rows})
    if section == "logs":
        _method(method, "GET")
        if len(rest) == 1:
            entry = await reqlog.get_log(ctx.store, rest[0])
            if entry is None:
                raise _not_found("request log entry")
            return _ok(entry)
        if rest:
            raise _not_found("admin route")
        return await _logs(q, ctx)
    raise _not_found("admin route")


def _method(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise GatewayError(405, f"method {method} not allowed here", type="invalid_request_error")


async def _logs(q: dict[str, list[str]], ctx: AdminContext) -> tuple[int, bytes]:
    try:
        limit = int(_one(q, "limit") or 50)
        status = _one(q, "status")
        status_i = int(status) if status else None
        cursor = _one(q, "cursor")
        if cursor is not None:
            int(cursor)
    except ValueError:
        raise bad_request("limit, status and cursor must be integers") from None
    rows, nxt = await reqlog.query_logs(
        ctx.store,
        limit=limit,
        cursor=cursor,
        model=_one(q, "model"),
        key=_one(q, "key"),
        status=status_i,
        provider=_one(q, "provider"),
        since=parse_time(_one(q, "since")),
        until=parse_time(_one(q, "until")),
    )
    return _ok({"data": rows, "next_cursor": nxt})


async def _keys(method: str, rest: list[str], body: bytes, ctx: AdminContext) -> tuple[int, bytes]:
    km = ctx.keys
    if not rest:
        if method == "GET":
            return _ok({"data": [key_json(r) for r in await km.list()]})
        _method(method, "POST")
        try:
            req = msgspec.json.decode(body or b"{}", type=CreateKey)
        except msgspec.ValidationError as e:
            raise bad_request(f"invalid key request: {e}") from None
        except msgspec.DecodeError:
            raise bad_request("request body must be a JSON object") from None
        if req.budget_period is not None and req.budget_period not in PERIODS:
            raise bad_request(f"budget_period must be one of {', '.join(PERIODS)}", param="budget_period")
        expires_at = req.expires_at
        if req.expires_in is not None:
            try:
                expires_at = time.time() + parse_duration(req.expires_in)
            except ValueError as e:
                raise bad_request(str(e), param="expires_in") from None
        try:
            token, rec = await km.create(
                req.name,
                models=req.models,
                budget_usd=req.budget_usd,
                budget_period=req.budget_period,  # type: ignore[arg-type]
                expires_at=expires_at,
                metadata=req.metadata,
                rpm_limit=req.rpm_limit,
                tpm_limit=req.tpm_limit,
                concurrency_limit=req.concurrency_limit,
            )
        except ValueError as e:
            raise bad_request(str(e)) from None
        out = key_json(rec)
        out["key"] = token
        return _ok(out, 201)
    if len(rest) != 1:
        raise _not_found("admin route")
    key_id = rest[0]
    if method == "GET":
        rec = await km.get(key_id)
        if rec is None:
            raise _not_found("key")
        return _ok(key_json(rec, km.current_spend(rec)))
    _method(method, "DELETE")
    try:
        ok = await km.revoke(key_id)
    except ValueError as e:
        raise bad_request(str(e)) from None
    if not ok:
        raise _not_found("key")
    return _ok({"id": key_id, "revoked": True})
