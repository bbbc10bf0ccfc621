"""Egress by the target's wire format: the byte relay, translated providers, the mock."""
