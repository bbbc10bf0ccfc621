"""Providers: what each provider type means on the wire, and the runtime objects.

A :class:`Provider` is a configured provider made ready for the hot path: its
origin and base path split once, its auth headers encoded once, its connection
pool. ``wire`` says which format it speaks:

* ``openai``: OpenAI-compatible (the byte fast path applies);
* ``anthropic`` / ``gemini``: reached through :mod:`fastgw.translate`;
* ``mock``: the built-in fake model, answered in-process (:mod:`fastgw.egress.mock`).

:func:`providers_from_env` registers providers whose usual environment
variables are set, so the embedded default reaches real providers with no file.
"""

from __future__ import annotations

import fnmatch
import logging
import ssl
from urllib.parse import urlsplit

import httpcore
import msgspec

from fastgw.config import Config, ProviderConfig
from fastgw.routing.keys import ApiKey, KeyRing, secrets_of
from fastgw.upstream.backend import AsyncioBackend, tls_context
from fastgw.upstream.client import Timeouts
from fastgw.upstream.connection import HeaderItems, prevalidate
from fastgw.upstream.pool import Pool

log = logging.getLogger("fastgw.providers")

DEFAULT_BASE_URLS: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "groq": "https://api.groq.com/openai/v1",
    "xai": "https://api.x.ai/v1",
    "mistral": "https://api.mistral.ai/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "together": "https://api.together.xyz/v1",
    "fireworks": "https://api.fireworks.ai/inference/v1",
    "ollama": "http://127.0.0.1:11434/v1",
    "vllm": "http://127.0.0.1:8000/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
}

WIRE: dict[str, str] = {"anthropic": "anthropic", "gemini": "gemini", "mock": "mock"}

# (env var holding the key, provider type, env var holding the base URL or None)
ENV_PROVIDERS: list[tuple[str, str, str | None]] = [
    ("OPENAI_API_KEY", "openai", "OPENAI_BASE_URL"),
    ("AZURE_OPENAI_API_KEY", "azure", "AZURE_OPENAI_ENDPOINT"),
    ("OPENROUTER_API_KEY", "openrouter", None),
    ("GROQ_API_KEY", "groq", None),
    ("XAI_API_KEY", "xai", None),
    ("MISTRAL_API_KEY", "mistral", None),
    ("DEEPSEEK_API_KEY", "deepseek", None),
    ("TOGETHER_API_KEY", "together", None),
    ("FIREWORKS_API_KEY", "fireworks", None),
    ("ANTHROPIC_API_KEY", "anthropic", None),
    ("GEMINI_API_KEY", "gemini", None),
]


def _with_v1(url: str) -> str:
    """Servers like Ollama and vLLM are often given as a bare origin: add /v1."""
    return url.rstrip("/") + "/v1" if urlsplit(url).path in ("", "/") else url.rstrip("/")


def providers_from_env(env: dict[str, str], taken: set[str]) -> list[ProviderConfig]:
    """Provider configs for every provider whose environment variables are set."""
    found: list[ProviderConfig] = []
    for key_var, ptype, url_var in ENV_PROVIDERS:
        key = env.get(key_var)
        if ptype == "gemini" and not key:
            key = env.get("GOOGLE_API_KEY")
        if not key or ptype in taken:
            continue
        base_url = env.get(url_var) if url_var else None
        if ptype == "azure":
            if not base_url:
                continue
            base_url = base_url.rstrip("/") + "/openai/v1"
        found.append(ProviderConfig(name=ptype, type=ptype, api_key=key, base_url=base_url))  # type: ignore[arg-type]
    for url_var, ptype in (("OLLAMA_BASE_URL", "ollama"), ("VLLM_BASE_URL", "vllm")):
        url = env.get(url_var)
        if url and ptype not in taken:
            found.append(ProviderConfig(name=ptype, type=ptype, base_url=_with_v1(url)))  # type: ignore[arg-type]
    return found


def resolved_providers(config: Config, env: dict[str, str]) -> list[ProviderConfig]:
    """The configured providers, plus env-registered ones and the built-in mock."""
    providers = list(config.providers)
    taken = {p.name for p in providers}
    if config.auto_providers:
        extra = providers_from_env(env, taken)
        providers.extend(extra)
        taken.update(p.name for p in extra)
    if config.mock_provider and "mock" not in taken:
        providers.append(ProviderConfig(name="mock", type="mock", models=["mock-gpt", "mock-gpt-stream"]))
    # A provider without its own strict_translation takes the top-level one.
    return [p if p.strict_translation is not None
            else msgspec.structs.replace(p, strict_translation=config.strict_translation) for p in providers]


class Provider:
    """A provider ready for the hot path."""

    def __init__(self, cfg: ProviderConfig, backend: AsyncioBackend) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.type = cfg.type
        self.wire = WIRE.get(cfg.type, "openai")
        self.models: list[str] = list(cfg.models)
        self.exact_models = {m for m in cfg.models if not _is_pattern(m)}
        self.model_patterns = [m for m in cfg.models if _is_pattern(m)]
        self.forward_client_key = cfg.forward_client_key
        self.name_bytes = cfg.name.encode()
        t = cfg.timeouts
        self.timeouts = Timeouts(t.connect, t.first_byte, t.idle, t.total)
        self.pool: Pool | None = None
        # Several API keys in rotation (None: one key, or none).
        self.keys: KeyRing | None = None
        self.secrets = secrets_of(cfg)
        self._targets: dict[str, bytes] = {}
        self.base_path = b""
        self.base_query = b""
        self.host_header = b""
        if self.wire == "mock":
            self.auth_headers: list[tuple[bytes, bytes]] = []
            self.extra_headers: list[tuple[bytes, bytes]] = []
            self.json_request_headers: HeaderItems = []
            return
        base_url = cfg.base_url or DEFAULT_BASE_URLS[cfg.type]
        parts = urlsplit(base_url)
        scheme = parts.scheme.encode()
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = (parts.hostname or "").encode("idna")
        origin = httpcore.Origin(scheme, host, port)
        default_port = port == (443 if parts.scheme == "https" else 80)
        self.host_header = host if default_port else host + b":" + str(port).encode()
        self.base_path = parts.path.rstrip("/").encode()
        self.base_query = parts.query.encode()
        self.pool = Pool(
            origin,
            backend=backend,
            max_connections=cfg.max_connections,
            pool_timeout=cfg.pool_timeout,
            connect_timeout=t.connect,
            keepalive_expiry=cfg.keepalive_expiry,
            ssl_context=provider_tls(cfg, parts.scheme == "https"),
        )
        self.auth_headers = auth_headers(cfg)
        self.extra_headers = [(k.lower().encode(), v.encode()) for k, v in cfg.headers.items()]
        self.json_request_headers = self._json_headers(self.auth_headers)
        if cfg.api_keys:
            keys = [ApiKey(k, auth := _auth_for(cfg.type, k), self._json_headers(auth)) for k in cfg.api_keys]
            self.auth_headers = keys[0].auth_headers
            self.json_request_headers = keys[0].json_request_headers
            if len(keys) > 1:
                self.keys = KeyRing(cfg.name, keys, cfg.key_cooldown_s)

    def _json_headers(self, auth: list[tuple[bytes, bytes]]) -> HeaderItems:
        """The fixed headers of every JSON request with these credentials, checked by h11 once."""
        try:
            return prevalidate([
                (b"host", self.host_header),
                (b"content-type", b"application/json"),
                (b"accept-encoding", b"identity"),
                *auth,
                *self.extra_headers,
            ])
        except ValueError as exc:
            raise ValueError(f"provider {self.name}: {exc}") from None

    def serves(self, model: str) -> bool:
        """Whether this provider lists ``model`` (exactly or by a glob pattern)."""
        if model in self.exact_models:
            return True
        return any(fnmatch.fnmatchcase(model, p) for p in self.model_patterns)

    def target_for(self, suffix: str) -> bytes:
        """:meth:`target` for a model endpoint suffix, computed once per suffix."""
        target = self._targets.get(suffix)
        if target is None:
            target = self._targets[suffix] = self.target(suffix.encode())
        return target

    def target(self, suffix: bytes, query: bytes = b"") -> bytes:
        """The request target for ``suffix`` (``/chat/completions``) under the base path."""
        target = self.base_path + suffix
        q = b"&".join(part for part in (self.base_query, query) if part)
        return target + b"?" + q if q else target


def provider_tls(cfg: ProviderConfig, https: bool) -> ssl.SSLContext | None:
    """The provider's own TLS context, or None for the default (certifi, verified)."""
    if cfg.ca_bundle is None and cfg.client_cert is None and cfg.verify:
        return None
    if not cfg.verify:
        log.warning("provider %s: TLS certificate verification is OFF (verify: false). Anyone on the path "
                    "to %s can read and change its traffic and its key; for development only.",
                    cfg.name, cfg.base_url)
    if not https:
        log.warning("provider %s: TLS settings are ignored: base_url is not https", cfg.name)
        return None
    try:
        return tls_context(cfg.ca_bundle, cfg.client_cert, cfg.client_key, cfg.verify)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"provider {cfg.name}: cannot load its TLS files: {exc}") from None


def _is_pattern(model: str) -> bool:
    return any(c in model for c in "*?[")


def auth_headers(cfg: ProviderConfig) -> list[tuple[bytes, bytes]]:
    """The headers carrying this provider's credentials, encoded once."""
    return _auth_for(cfg.type, cfg.api_key) if cfg.api_key else []


def _auth_for(ptype: str, secret: str) -> list[tuple[bytes, bytes]]:
    key = secret.encode()
    if ptype == "azure":
        return [(b"api-key", key)]
    if ptype == "anthropic":
        return [(b"x-api-key", key)]
    if ptype == "gemini":
        return [(b"x-goog-api-key", key)]
    return [(b"authorization", b"Bearer " + key)]
