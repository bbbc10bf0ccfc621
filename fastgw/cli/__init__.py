"""The ``fastgw`` command.

* ``fastgw serve [--config PATH] [--host H] [--port N] [--workers N]``: run the
  gateway on granian (ASGI interface, uvloop). SIGTERM/SIGINT stop accepting,
  let in-flight requests and streams finish within ``server.grace_period``
  seconds, then close them.
* ``fastgw check-config PATH``: validate a config and print the resolved
  providers, models and aliases, keys masked.
* ``fastgw keys ...`` and ``fastgw bench ...``: see their own ``--help``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from fastgw import __version__
from fastgw.config import Config, ConfigError, load_config, mask_secret
from fastgw.routing.providers import DEFAULT_BASE_URLS, resolved_providers


def _load(path: str | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"fastgw: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _check_aliases(config: Config) -> Any:
    from fastgw.app import Gateway

    try:
        return Gateway(config)
    except ValueError as exc:
        print(f"fastgw: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args.config)
    _check_aliases(config)
    server = config.server
    host = args.host or server.host
    port = server.port if args.port is None else args.port
    workers = args.workers or server.workers
    # Workers size their share of in-process limits by this (fastgw.admission.limits).
    os.environ["FASTGW_WORKERS"] = str(workers)
    if args.config:
        os.environ["FASTGW_CONFIG"] = str(Path(args.config).resolve())
    else:
        os.environ.pop("FASTGW_CONFIG", None)

    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings

    from fastgw.controls.runtime import metrics_dir_for_serve

    # Workers are processes: they share metric snapshots through this directory.
    metrics_dir = metrics_dir_for_serve()

    print(f"fastgw {__version__} listening on http://{host}:{port} ({workers} worker{'s' * (workers > 1)})",
          file=sys.stderr, flush=True)
    Granian(
        target="fastgw.app:create_app",
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        http1_settings=HTTP1Settings(header_read_timeout=max(1, int(server.header_timeout * 1000)),
                                     max_buffer_size=server.max_header_bytes),
        websockets=False,
        workers=workers,
        workers_kill_timeout=max(1, int(server.grace_period)),
        # Let requests reach the app up to its own limit (which answers 503 past it)
        # rather than waiting unanswered in granian's queue.
        backpressure=server.max_concurrent_requests + 64,
        log_level=server.log_level,  # type: ignore[arg-type]
        log_access=False,
    ).serve()
    import shutil

    shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.path)
    gateway = _check_aliases(config)
    print(f"config {args.path}: OK")
    print(f"server: {config.server.host}:{config.server.port}, {config.server.workers} worker(s), "
          f"body limit {config.server.max_body_bytes} bytes")
    master = config.master_key or os.environ.get("FASTGW_MASTER_KEY")
    print(f"master key: {mask_secret(master) if master else '(none: gateway auth off)'}")
    print("providers:")
    for p in resolved_providers(config, dict(os.environ)):
        url = p.base_url or DEFAULT_BASE_URLS.get(p.type, "(in-process)")
        keys = ", ".join(mask_secret(k) for k in p.api_keys) if p.api_keys else mask_secret(p.api_key)
        print(f"  {p.name}: type={p.type} base_url={url} api_key{'s (rotated)' if p.api_keys else ''}={keys} "
              f"max_connections={p.max_connections}")
        models = ", ".join(p.models) if p.models else "(any, as '" + p.name + "/<model>')"
        print(f"    models: {models}{' (+ discovered at start)' if p.discover_models else ''}")
    if config.aliases:
        print("aliases:")
        for name, targets in config.aliases.items():
            print(f"  {name} -> {', '.join([targets] if isinstance(targets, str) else targets)}")
    if gateway.router.plans:
        print("routes (retries, fallbacks, balancing):")
        for name, plan in gateway.router.plans.items():
            print(f"  {name}: {plan.describe()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastgw", description="The fast, dependable LLM gateway.")
    parser.add_argument("--version", action="version", version=f"fastgw {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="YAML config file (default: the embedded default)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 4000)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.set_defaults(func=cmd_serve)
    check = sub.add_parser("check-config", help="validate a config file and print what it resolves to")
    check.add_argument("path")
    check.set_defaults(func=cmd_check_config)
    sub.add_parser("keys", help="manage virtual API keys (fastgw keys --help)", add_help=False)
    sub.add_parser("bench", help="run the benchmark matrix (fastgw bench --help)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "keys":
        from fastgw.cli.keys import main as keys_main

        return keys_main(argv[1:])
    if argv and argv[0] == "bench":
        from fastgw.cli.bench import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
