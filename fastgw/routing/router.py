"""Model resolution: which provider serves a request's ``model``, under which name.

A client may send, in this order of precedence:

1. a route (``routes:``) or an alias (``fast`` -> ``groq/llama-3.1-8b-instant``);
   a route, or an alias listing several targets, carries a
   :class:`~fastgw.routing.targets.RoutePlan` that the attempt loop
   (:mod:`fastgw.routing.attempts`) follows: balancing, retries, fallbacks;
2. a bare model name that exactly one provider lists (``gpt-4o-mini``); names
   may contain ``/`` (OpenRouter's ``openai/gpt-4o``) and are matched whole
   first;
3. ``provider/model``: the provider named before the first ``/``, the model
   after it, sent upstream as ``model``.

Unknown or ambiguous names raise a 404 ``model_not_found`` whose message says
how to qualify the name. Results are cached per name (bounded): resolution
costs one dict lookup on the hot path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastgw.errors import GatewayError, model_not_found
from fastgw.routing.policy import RouteConfig
from fastgw.routing.providers import Provider
from fastgw.routing.targets import RoutePlan, alias_plan, build_plan, key_rotation_plan, single_plan

_CACHE_LIMIT = 4096


class Route:
    """Where a model name goes: the provider, the upstream's name, whether to rewrite."""

    __slots__ = ("model", "plan", "provider", "rewrite", "targets", "upstream_model", "upstream_model_json")

    def __init__(self, model: str, provider: Provider, upstream_model: str, targets: list[str] | None = None,
                 plan: RoutePlan | None = None) -> None:
        self.model = model
        self.provider = provider
        self.upstream_model = upstream_model
        # The client's model string must change on the way upstream.
        self.rewrite = upstream_model != model
        self.upstream_model_json = b'"' + upstream_model.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'
        # Alias targets in order, for fallbacks.
        self.targets = targets or [f"{provider.name}/{upstream_model}"]
        # Several deployments, retries or key rotation: the attempt loop's plan (None: one plain target).
        self.plan = plan


class Router:
    def __init__(self, providers: Iterable[Provider], aliases: dict[str, str | list[str]],
                 routes: dict[str, RouteConfig] | None = None) -> None:
        self.providers: dict[str, Provider] = {p.name: p for p in providers}
        self.aliases: dict[str, list[str]] = {
            name: [t] if isinstance(t, str) else list(t) for name, t in aliases.items()
        }
        self.route_configs = routes or {}
        self._cache: dict[str, Route] = {}
        self.quota: Any = None  # fastgw.admission.quota.Quota: model/provider limits per attempt
        # Every route and multi-target alias, built once: their breakers and load live here.
        self.plans: dict[str, RoutePlan] = {}
        for name, cfg in self.route_configs.items():
            try:
                self.plans[name] = build_plan(name, cfg, self._target)[0]
            except GatewayError:
                continue  # check_aliases names the bad target
        for name, targets in self.aliases.items():
            if len(targets) > 1:
                try:
                    self.plans[name] = alias_plan(name, [self._target(t) for t in targets])
                except GatewayError:
                    continue

    def use_quota(self, quota: Any) -> None:
        """Count model and provider limits per attempt: on every plan with a limited deployment,
        and (in :meth:`resolve`) on a plain model with one, which then gets a one-target plan."""
        self.quota = quota
        self._cache.clear()
        for plan in self.plans.values():
            if any(quota.rules(d.provider.name, d.upstream_model, d.model) for d in plan.deployments):
                plan.quota = quota

    def _target(self, target: str) -> tuple[Provider, str]:
        route = self._resolve_direct(target)
        return route.provider, route.upstream_model

    def check_aliases(self) -> None:
        """Every alias and route target must resolve (called at start-up)."""
        for name, cfg in self.route_configs.items():
            for i, t in enumerate(cfg.target_list()):
                try:
                    self._resolve_direct(t.model)
                except GatewayError as exc:
                    raise ValueError(f"routes.{name}.targets[{i}]: {exc.message}") from None
        for name, targets in self.aliases.items():
            for i, target in enumerate(targets):
                try:
                    self._resolve_direct(target)
                except GatewayError as exc:
                    where = f"aliases.{name}" + (f"[{i}]" if len(targets) > 1 else "")
                    raise ValueError(f"{where}: {exc.message}") from None

    def resolve(self, model: str) -> Route:
        route = self._cache.get(model)
        if route is not None:
            return route
        plan = self.plans.get(model)
        targets = self.aliases.get(model)
        if plan is not None:
            first = plan.deployments[0]
            route = Route(model, first.provider, first.upstream_model, [d.name for d in plan.deployments], plan)
        elif targets is not None:
            first = self._resolve_direct(targets[0])
            route = Route(model, first.provider, first.upstream_model, targets)
        else:
            route = self._resolve_direct(model)
        if plan is None and route.provider.keys is not None:
            route.plan = key_rotation_plan(model, route.provider, route.upstream_model)
        quota = self.quota
        if plan is None and quota is not None and quota.rules(route.provider.name, route.upstream_model, model):
            if route.plan is None:
                route.plan = single_plan(model, route.provider, route.upstream_model)
            route.plan.quota = quota
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[model] = route
        return route

    def _resolve_direct(self, model: str) -> Route:
        serving = [p for p in self.providers.values() if model in p.exact_models]
        if len(serving) == 1:
            return Route(model, serving[0], model)
        prefix, sep, rest = model.partition("/")
        if not serving and sep and rest and prefix in self.providers:
            return Route(model, self.providers[prefix], rest)
        if not serving:
            serving = [p for p in self.providers.values() if p.model_patterns and p.serves(model)]
            if len(serving) == 1:
                return Route(model, serving[0], model)
        if len(serving) > 1:
            names = ", ".join(f"'{p.name}/{model}'" for p in serving)
            raise model_not_found(
                f"The model '{model}' is served by several providers; qualify it as one of {names}."
            )
        choices = ", ".join(sorted(self.providers)) or "(none)"
        raise model_not_found(
            f"The model '{model}' does not exist or is not configured. Send 'provider/model' "
            f"(providers: {choices}), an alias, or a model listed in GET /v1/models."
        )

    def provider_named(self, name: bytes) -> Provider | None:
        """The provider whose name is ``name`` (raw bytes from a path)."""
        return self.providers.get(name.decode("latin-1"))

    def model_list(self) -> list[tuple[str, str]]:
        """(model id, owning provider) for every name a client may send."""
        out: list[tuple[str, str]] = []
        seen: set[str] = set()
        counts: dict[str, int] = {}
        for p in self.providers.values():
            for m in p.exact_models:
                counts[m] = counts.get(m, 0) + 1
        for name in [*self.route_configs, *self.aliases]:
            try:
                owner = self.resolve(name).provider.name
            except GatewayError:
                continue
            out.append((name, owner))
            seen.add(name)
        for p in self.providers.values():
            for m in p.models:
                if "*" in m or "?" in m or "[" in m:
                    continue
                if counts.get(m) == 1 and m not in seen:
                    out.append((m, p.name))
                    seen.add(m)
                qualified = f"{p.name}/{m}"
                if qualified not in seen:
                    out.append((qualified, p.name))
                    seen.add(qualified)
        return out
