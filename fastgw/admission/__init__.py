"""Authorize and admit: who may call the gateway, and whether it has room for the request."""
