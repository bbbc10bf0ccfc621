"""Route: which provider (and, on failure, which next target) serves a model name."""
