"""``fastgw keys create|list|revoke``: manage virtual keys in the store directly.

The store URL comes from ``--store``, else ``$FASTGW_STORE_URL``, else
``sqlite:///./fastgw.db``. ``create`` prints the plaintext key once; ``list`` shows only
display prefixes. Running gateways see a revoke within their key cache TTL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

import msgspec

from fastgw.controls.admin import key_json, parse_duration
from fastgw.controls.keys import PERIODS, KeyManager
from fastgw.controls.store import DEFAULT_URL, open_store


def _store_url(args: argparse.Namespace) -> str:
    return args.store or os.environ.get("FASTGW_STORE_URL") or DEFAULT_URL


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastgw keys", description="Manage fastgw virtual API keys.")
    sub = p.add_subparsers(dest="cmd", required=True)
    store_help = "store URL (default: $FASTGW_STORE_URL or sqlite:///./fastgw.db)"
    c = sub.add_parser("create", help="create a key (prints it once)")
    c.add_argument("--name", required=True)
    c.add_argument("--models", default="", help="comma-separated model patterns (fnmatch); empty = all")
    c.add_argument("--budget", type=float, help="budget in USD")
    c.add_argument("--budget-period", choices=PERIODS, help="budget reset period (default: lifetime)")
    c.add_argument("--expires-in", help="e.g. 30d, 12h, 90m, or seconds")
    c.add_argument("--rpm", type=int, help="requests per minute limit")
    c.add_argument("--tpm", type=int, help="tokens per minute limit")
    c.add_argument("--concurrency", type=int, help="limit of requests in flight at once")
    c.add_argument("--metadata", action="append", default=[], metavar="K=V", help="repeatable")
    c.add_argument("--json", action="store_true", help="print the record as JSON")
    c.add_argument("--store", help=store_help)
    ls = sub.add_parser("list", help="list keys (prefixes only)")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--store", help=store_help)
    r = sub.add_parser("revoke", help="revoke a key by id or display prefix")
    r.add_argument("id")
    r.add_argument("--store", help=store_help)
    return p


def _fmt_time(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts))


async def _run(args: argparse.Namespace) -> int:
    store = await open_store(_store_url(args))
    km = KeyManager(store)
    try:
        if args.cmd == "create":
            meta: dict[str, Any] = {}
            for kv in args.metadata:
                k, sep, v = kv.partition("=")
                if not sep or not k:
                    print(f"error: --metadata expects K=V, got {kv!r}", file=sys.stderr)
                    return 2
                meta[k] = v
            expires_at = None
            if args.expires_in:
                try:
                    expires_at = time.time() + parse_duration(args.expires_in)
                except ValueError as e:
                    print(f"error: {e}", file=sys.stderr)
                    return 2
            token, rec = await km.create(
                args.name,
                models=[m.strip() for m in args.models.split(",") if m.strip()],
                budget_usd=args.budget,
                budget_period=args.budget_period,
                expires_at=expires_at,
                metadata=meta,
                rpm_limit=args.rpm,
                tpm_limit=args.tpm,
                concurrency_limit=args.concurrency,
            )
            if args.json:
                out = key_json(rec)
                out["key"] = token
                print(msgspec.json.encode(out).decode())
            else:
                print(token)
                print(
                    f"id: {rec.id}  name: {rec.name}  (store this key now: it is not shown again)",
                    file=sys.stderr,
                )
            return 0
        if args.cmd == "list":
            recs = await km.list()
            if args.json:
                print(msgspec.json.encode([key_json(r) for r in recs]).decode())
                return 0
            print(
                f"{'ID':<21} {'KEY':<15} {'NAME':<20} {'MODELS':<20} {'SPEND/BUDGET':<20} {'EXPIRES':<16} STATUS"
            )
            for r in recs:
                budget = "-" if r.budget_usd is None else f"{r.budget_usd:g}/{r.budget_period or 'total'}"
                status = (
                    "revoked"
                    if r.revoked
                    else ("expired" if r.expires_at and r.expires_at < time.time() else "active")
                )
                print(
                    f"{r.id:<21} {r.prefix + '...':<15} {r.name[:20]:<20} {(','.join(r.models) or '*')[:20]:<20} "
                    f"{f'{r.spend_usd:.4f} / {budget}':<20} {_fmt_time(r.expires_at):<16} {status}"
                )
            return 0
        try:
            ok = await km.revoke(args.id)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        if not ok:
            print(f"error: no key {args.id!r}", file=sys.stderr)
            return 1
        print(f"revoked {args.id}")
        return 0
    finally:
        await km.close()
        await store.close()


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
