"""Production controls: virtual keys, usage and cost, the request log, metrics, admin, store."""
