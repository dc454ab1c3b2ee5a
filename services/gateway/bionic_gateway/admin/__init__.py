"""Server-wide operations under /v1/admin, for admin keys only."""
