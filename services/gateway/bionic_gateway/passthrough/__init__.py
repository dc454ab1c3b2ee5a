"""Everything else under /v1, relayed to the upstream."""
