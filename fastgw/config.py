"""Configuration: a YAML file decoded into msgspec Structs.

Loading is three steps, each failing with :class:`ConfigError` whose message
names the path of the bad value (``providers[2].base_url: expected a URL``),
never a traceback:

1. parse YAML;
2. interpolate ``${VAR}`` and ``${VAR:-default}`` in every string value
   (``$${`` stands for a literal ``${``);
3. convert into :class:`Config` (unknown keys and wrong types rejected), then
   check values a type cannot express (URLs, names, alias targets).

Without a file, :func:`default_config` gives the embedded default: the built-in
``mock`` provider plus every provider whose usual environment variables are set
(see :mod:`fastgw.routing.providers`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec
import yaml

from fastgw.config_shared import BudgetsConfig, CacheConfig, LimitsConfig, RedisConfig, check_shared
from fastgw.routing.policy import RouteConfig

ProviderType = Literal[
    "openai",
    "azure",
    "openrouter",
    "groq",
    "xai",
    "mistral",
    "deepseek",
    "together",
    "fireworks",
    "ollama",
    "vllm",
    "openai-compatible",
    "generic",
    "anthropic",
    "gemini",
    "mock",
]


class ConfigError(Exception):
    """A configuration problem, with the path of the offending value in its message."""


class Timeouts(msgspec.Struct, forbid_unknown_fields=True):
    """Seconds. ``first_byte`` covers a non-streaming model's whole think time."""

    connect: float = 10.0
    first_byte: float = 600.0
    idle: float = 300.0
    total: float = 1800.0


class MockOptions(msgspec.Struct, forbid_unknown_fields=True):
    """The built-in mock model: how long its answers are and how they are paced."""

    words: int = 16
    ttfb_ms: float = 0.0
    interval_ms: float = 0.0


class ProviderConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    type: ProviderType
    base_url: str | None = None
    api_key: str | None = None
    # Several keys used in rotation; a key answered 401/403 (or 429 repeatedly) is set aside
    # for ``key_cooldown_s`` (see fastgw.routing.keys).
    api_keys: list[str] = []
    key_cooldown_s: float = 300.0
    headers: dict[str, str] = {}
    timeouts: Timeouts = msgspec.field(default_factory=Timeouts)
    max_connections: int = 1024
    pool_timeout: float = 10.0
    keepalive_expiry: float = 60.0
    models: list[str] = []
    discover_models: bool = False
    forward_client_key: bool = False
    # TLS to the upstream: a PEM CA bundle to trust instead of the default (certifi) one,
    # a client certificate and key for mTLS, and verification (off only for development).
    ca_bundle: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    verify: bool = True
    # Translated providers (anthropic): max_tokens when the client sent none.
    default_max_tokens: int | None = None
    # Translated providers: drop parameters the provider cannot honour instead of a 400.
    drop_unsupported_params: bool = False
    # Translated providers: refuse (400 naming every field) what would otherwise be dropped.
    # None: the top-level strict_translation.
    strict_translation: bool | None = None
    mock: MockOptions = msgspec.field(default_factory=MockOptions)


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 4000
    workers: int = 1
    max_body_bytes: int = 32 * 1024 * 1024
    grace_period: float = 30.0
    # Requests in flight per worker (model endpoints and passthrough); past it new
    # ones get 503 "overloaded" at once instead of queueing.
    max_concurrent_requests: int = 2048
    # Client-side timeouts (seconds): the whole request body must arrive within body_timeout
    # (408 past it); an answer the client does not read for send_timeout is abandoned.
    body_timeout: float = 60.0
    send_timeout: float = 60.0
    # The request head: its size (bytes; 431 past it) and the time it may take to arrive
    # (seconds; the connection is closed past it). Enforced by the HTTP server (granian).
    max_header_bytes: int = 65536
    header_timeout: float = 30.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class UsageConfig(msgspec.Struct, forbid_unknown_fields=True):
    # Ask streaming upstreams for a usage chunk when the client did not, and remove
    # that chunk before the client sees it.
    inject_stream_usage: bool = True


class LoggingConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The request log: one record per request, written in batches off the request path."""

    enabled: bool = True
    # Keep request/response bodies with the record (size-capped, keys redacted).
    log_bodies: bool = False
    # Audit log: bodies kept and the admin API shows each entry's conversation thread.
    audit: bool = False
    body_cap: int = 16384
    retention_days: float = 30.0
    queue_size: int = 10000
    batch_size: int = 500
    flush_interval: float = 0.5


class PriceOverride(msgspec.Struct, forbid_unknown_fields=True):
    """USD per million tokens."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write_input: float | None = None


class Config(msgspec.Struct, forbid_unknown_fields=True):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    providers: list[ProviderConfig] = []
    aliases: dict[str, str | list[str]] = {}
    # Retries, fallbacks and load balancing over several targets (fastgw.routing.policy).
    routes: dict[str, RouteConfig] = {}
    master_key: str | None = None
    # Register providers from their usual environment variables (OPENAI_API_KEY, ...).
    auto_providers: bool = True
    # Always offer the built-in mock provider (name "mock").
    mock_provider: bool = True
    # The default of every provider's strict_translation.
    strict_translation: bool = False
    # Keys, usage and the request log live here: sqlite:///path.db or postgresql://...
    # (default: $FASTGW_STORE_URL, else sqlite:///./fastgw.db).
    store_url: str | None = None
    keys_cache_ttl: float = 5.0
    usage: UsageConfig = msgspec.field(default_factory=UsageConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    pricing: dict[str, PriceOverride] = {}
    # Shared state across workers and instances (fastgw.config_shared).
    redis: RedisConfig = msgspec.field(default_factory=RedisConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    budgets: BudgetsConfig = msgspec.field(default_factory=BudgetsConfig)
    cache: CacheConfig = msgspec.field(default_factory=CacheConfig)


_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _interpolate(value: Any, path: str, env: dict[str, str]) -> Any:
    if isinstance(value, str):
        if "$" not in value:
            return value

        def sub(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            name, default = match.group(1), match.group(2)
            if name in env and env[name] != "":
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"{path or 'config'}: environment variable {name} is not set")

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, f"{path}.{k}" if path else str(k), env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, f"{path}[{i}]", env) for i, v in enumerate(value)]
    return value


_AT = re.compile(r"^(.*?) - at `\$(.*)`$")


def _validation_message(exc: msgspec.ValidationError) -> str:
    text = str(exc)
    match = _AT.match(text)
    if match is None:
        top_unknown = re.match(r"Object contains unknown field `(.*)`$", text)
        if top_unknown:
            return f"{top_unknown.group(1)}: unknown key"
        return f"config: {text[:1].lower()}{text[1:]}"
    message, path = match.group(1), match.group(2).lstrip(".")
    message = message.replace("`", "")
    unknown = re.match(r"Object contains unknown field (.*)", message)
    if unknown:
        field = unknown.group(1)
        return f"{path + '.' if path else ''}{field}: unknown key"
    message = message[:1].lower() + message[1:]
    message = message.replace("expected str", "expected a string").replace("expected int", "expected an integer")
    message = message.replace("expected float", "expected a number").replace("expected bool", "expected a boolean")
    return f"{path or 'config'}: {message}"


def check_url(url: str, path: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{path}: expected a URL (http:// or https://), got {url!r}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ConfigError(f"{path}: expected a URL with a valid port, got {url!r}") from None


def _check_tls(provider: ProviderConfig, where: str) -> None:
    for key in ("ca_bundle", "client_cert", "client_key"):
        path = getattr(provider, key)
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{where}.{key}: no such file: {path!r}")
    if provider.client_key is not None and provider.client_cert is None:
        raise ConfigError(f"{where}.client_key: needs client_cert")


def _check(config: Config) -> None:
    seen: set[str] = set()
    for i, provider in enumerate(config.providers):
        where = f"providers[{i}]"
        if not _NAME.match(provider.name):
            raise ConfigError(f"{where}.name: expected letters, digits, '.', '_' or '-', got {provider.name!r}")
        if provider.name in seen:
            raise ConfigError(f"{where}.name: duplicate provider name {provider.name!r}")
        seen.add(provider.name)
        if provider.base_url is not None:
            check_url(provider.base_url, f"{where}.base_url")
        elif provider.type in ("openai-compatible", "generic", "azure"):
            raise ConfigError(f"{where}.base_url: required for type {provider.type}")
        _check_tls(provider, where)
        if provider.max_connections < 1:
            raise ConfigError(f"{where}.max_connections: expected a number >= 1")
        for key in ("connect", "first_byte", "idle", "total"):
            if getattr(provider.timeouts, key) <= 0:
                raise ConfigError(f"{where}.timeouts.{key}: expected a number > 0")
        for j, model in enumerate(provider.models):
            if not model:
                raise ConfigError(f"{where}.models[{j}]: expected a model name")
    server = config.server
    if not 0 <= server.port <= 65535:
        raise ConfigError(f"server.port: expected a port number, got {server.port}")
    if server.workers < 1:
        raise ConfigError("server.workers: expected a number >= 1")
    if server.max_concurrent_requests < 1:
        raise ConfigError("server.max_concurrent_requests: expected a number >= 1")
    if server.max_header_bytes < 8192:
        raise ConfigError("server.max_header_bytes: expected at least 8192")
    for key in ("body_timeout", "send_timeout", "header_timeout"):
        if getattr(server, key) <= 0:
            raise ConfigError(f"server.{key}: expected a number > 0")
    if server.max_body_bytes < 1024:
        raise ConfigError("server.max_body_bytes: expected at least 1024")
    if config.store_url is not None and not config.store_url.startswith(("sqlite://", "postgresql://", "postgres://")):
        raise ConfigError("store_url: expected sqlite:///path or postgresql://...")
    if config.logging.queue_size < 1 or config.logging.batch_size < 1:
        raise ConfigError("logging.queue_size: expected a number >= 1")
    for alias, targets in config.aliases.items():
        if isinstance(targets, list) and not targets:
            raise ConfigError(f"aliases.{alias}: expected at least one target")
    for i, provider in enumerate(config.providers):
        if provider.api_key and provider.api_keys:
            raise ConfigError(f"providers[{i}].api_keys: give api_key or api_keys, not both")
        if provider.key_cooldown_s <= 0:
            raise ConfigError(f"providers[{i}].key_cooldown_s: expected a number > 0")
    for name, route in config.routes.items():
        if name in config.aliases:
            raise ConfigError(f"routes.{name}: also defined under aliases")
        problem = route.problem()
        if problem:
            raise ConfigError(f"routes.{name}.{problem}")
    problem = check_shared(config.redis, config.limits, config.budgets, config.cache)
    if problem is not None:
        raise ConfigError(problem)


def parse_config(text: str, env: dict[str, str] | None = None) -> Config:
    """Parse YAML text into a checked :class:`Config`."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(text, Loader=loader) if text.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"config: invalid YAML{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("config: expected a mapping at the top level")
    data = _interpolate(data, "", dict(os.environ) if env is None else env)
    routes = data.get("routes")
    if isinstance(routes, dict):
        # One by one first, so that a bad value is named with its route's name.
        for name, value in routes.items():
            try:
                msgspec.convert(value, RouteConfig, strict=False)
            except msgspec.ValidationError as exc:
                message = _validation_message(exc)
                where = f"routes.{name}"
                raise ConfigError(f"{where}: {message[8:].replace('`', '')}" if message.startswith("config: ")
                                  else f"{where}.{message}") from None
    try:
        config = msgspec.convert(data, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_validation_message(exc)) from None
    _check(config)
    return config


def load_config(path: str | Path | None, env: dict[str, str] | None = None) -> Config:
    """Load the file at ``path``, or the embedded default when ``path`` is None."""
    if path is None:
        return Config()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    return parse_config(text, env)


def mask_secret(value: str | None) -> str:
    """Show enough of a key to recognise it, never enough to use it."""
    if not value:
        return "(none)"
    if len(value) < 12:
        return "***"
    return f"{value[:4]}…{value[-2:]}"
