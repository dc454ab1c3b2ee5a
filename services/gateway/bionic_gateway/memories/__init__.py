"""The memory management API under /v1/memories."""
