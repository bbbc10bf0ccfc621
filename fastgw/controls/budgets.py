"""Budget admission: a budgeted key reserves a request's cost before it goes upstream.

Before the request, :meth:`Budgets.reserve` prices its worst case (prompt estimated from
the body size, completion from ``max_tokens`` / ``max_completion_tokens`` or
``budgets.default_completion_tokens``) and adds it to the key's stored spend with one
conditional upsert (:meth:`fastgw.controls.keys.KeyManager.reserve`): the store refuses
the add when it would pass the budget, so instances racing on one key (sharing one
PostgreSQL) never spend past it together. Accounting then corrects the spend by the
difference between the real cost and the reservation (a failed request gives it back).

A budgeted key on a model with no known price cannot be metered: it is refused with 403
``model_not_priced`` unless ``budgets.unpriced: allow``.
"""

from __future__ import annotations

from typing import Any

from fastgw.admission.limits import estimate_tokens
from fastgw.config_shared import BudgetsConfig
from fastgw.controls.keys import KeyManager, KeyRecord, over_budget
from fastgw.controls.pricing import Pricing
from fastgw.errors import GatewayError


class Budgets:
    def __init__(self, cfg: BudgetsConfig, pricing: Pricing, keys: KeyManager) -> None:
        self.cfg = cfg
        self.pricing = pricing
        self.keys = keys

    async def reserve(self, key: KeyRecord, model: str, provider_type: str, body: bytes,
                      fields: Any = None) -> float:
        """The USD reserved for this request (0 when unmetered); raises 403/429 on refusal.
        ``fields``: the body's output caps if already decoded (see :func:`estimate_tokens`)."""
        price = self.pricing.lookup(model, provider_type or None)
        if price is None:
            if self.cfg.unpriced == "allow":
                return 0.0
            raise GatewayError(
                403,
                f"This API key has a budget, and model '{model}' has no known price, so its spend "
                "cannot be metered. Price the model under 'pricing:' or set 'budgets.unpriced: allow'.",
                type="permission_error", param="model", code="model_not_priced")
        prompt, cap = estimate_tokens(body, fields)
        usd = self.pricing.cost(model, provider_type or None, prompt, cap or self.cfg.default_completion_tokens)
        if not usd:
            return 0.0
        if not await self.keys.reserve(key, usd):
            raise over_budget()
        return usd
