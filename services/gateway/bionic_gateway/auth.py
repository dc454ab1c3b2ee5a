"""API keys to tenants. A raw key is never stored or logged: only its salted hash is."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from bionic_gateway.config import GatewaySettings
from bionic_gateway.errors import OpenAIError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the tenant, and the bearer key only for upstream pass-through."""

    tenant: str
    key: str = field(repr=False)
    admin: bool = False


class TenantResolver:
    """With configured keys only those are accepted; with none the gateway is open and
    each distinct key (or no key) is its own tenant, named by a salted hash. Admin keys are
    accepted keys that may also do admin operations.

    Keys are compared as fixed-length salted digests with `hmac.compare_digest`, every
    configured key each time, so the time taken does not tell how much of a key matched."""

    def __init__(self, keys: dict[str, str], salt: str, admin_keys: Sequence[str] = ()) -> None:
        self._salt = salt.encode()
        self._keys = [(self._digest(k), tenant) for k, tenant in keys.items()]
        if keys and not set(admin_keys) <= set(keys):
            raise ValueError("every admin key must also be one of the configured API keys")
        self._admins = [self._digest(k) for k in admin_keys]

    @property
    def open(self) -> bool:
        """No keys configured: every key is accepted, as its own tenant."""
        return not self._keys

    def _digest(self, key: str) -> bytes:
        return hmac.new(self._salt, key.encode(), hashlib.sha256).digest()

    def tenant(self, authorization: str | None) -> str:
        return self.caller(authorization).tenant

    def caller(self, authorization: str | None) -> Caller:
        key = bearer_key(authorization)
        digest = self._digest(key)
        admin = False
        for known in self._admins:  # every key, each compared whole: see the class
            admin |= hmac.compare_digest(known, digest)
        if not self._keys:
            return Caller("t_" + digest.hex()[:32], key, admin)
        found = None
        for known, tenant in self._keys:
            if hmac.compare_digest(known, digest):
                found = tenant
        if found is None:
            raise OpenAIError(401, "invalid API key", code="invalid_api_key")
        return Caller(found, key, admin)


def bearer_key(authorization: str | None) -> str:
    if not authorization:
        return ""
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def load_keys(settings: GatewaySettings) -> dict[str, str]:
    """Configured keys → tenants: the keys file (JSON object) merged with api_keys."""
    keys: dict[str, str] = {}
    if settings.api_keys_file:
        with open(settings.api_keys_file, encoding="utf-8") as f:
            loaded = json.load(f)
        if not isinstance(loaded, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and k and v for k, v in loaded.items()
        ):
            raise ValueError(f"{settings.api_keys_file}: expected a JSON object of key: tenant")
        keys.update(loaded)
    keys.update(settings.api_keys)
    return keys


def load_salt(settings: GatewaySettings) -> str:
    """The configured salt, else one generated once and kept next to the data."""
    if settings.tenant_salt:
        return settings.tenant_salt
    path = settings.tenant_salt_file
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    salt = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(salt)
    log.info("generated a tenant salt in %s", path)
    return salt
