"""What the memory logic refuses, mapped to gRPC status codes at the edge."""

from __future__ import annotations


class InvalidArgument(ValueError):
    """The request cannot be served as asked; nothing was changed."""


class NotFound(LookupError):
    """No such memory in the caller's scope (whether or not it exists elsewhere)."""
