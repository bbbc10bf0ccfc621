"""State shared across workers and instances: the Redis connection."""
