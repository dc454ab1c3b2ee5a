"""Admin-only operations refuse tenant keys; and, last of the package, no key used by any
test of tests/security appears raw in a log, the stored memories or the task queue."""

from __future__ import annotations

import json

from tests.security.conftest import ADMIN_KEY, SecureStack
from tests.support.leaks import leaked_keys

TENANT_KEY = "sk-plain-tenant-3c9a"
LINE = {
    "id": "b1c0ffee-0000-4000-8000-000000000001",
    "role": "user",
    "tier": "ltm",
    "text": "I moved to Hangzhou in 2019.",
    "user": "ignored",
    "created_at": 1_000_000_000.0,
    "updated_at": 1_100_000_000.0,
    "strength": 0.75,
    "current_strength": 0.5,
    "expires_at": None,
    "pinned": True,
    "metadata": {"source": "backup"},
}


def test_tenant_keys_get_403_for_import_and_server_stats(sec: SecureStack) -> None:
    with sec.http(TENANT_KEY) as http:
        refused = [
            http.post("/memories/import", params={"user": "h"}, content=json.dumps(LINE)),
            http.get("/admin/stats"),
        ]
        for answer in refused:
            assert answer.status_code == 403
            assert answer.json()["error"] == {
                "message": "this operation needs an admin key",
                "type": "permission_error",
                "param": None,
                "code": "admin_only",
            }
        assert http.get("/memories/export", params={"user": "h"}).text == ""  # nothing landed
        # Everything else stays open to the tenant key.
        assert http.post("/memories", json={"user": "h", "text": "x"}).status_code == 201


def test_an_admin_imports_with_the_original_timestamps(sec: SecureStack) -> None:
    with sec.http(ADMIN_KEY) as http:
        done = http.post("/memories/import", params={"user": "h"}, content=json.dumps(LINE))
        assert done.json() == {"object": "memory.import", "user": "h", "imported": 1, "skipped": 0}
        (got,) = [
            json.loads(x)
            for x in http.get("/memories/export", params={"user": "h"}).text.splitlines()
        ]
    kept = ("id", "text", "created_at", "updated_at", "strength", "pinned", "metadata")
    assert {k: got[k] for k in kept} == {k: LINE[k] for k in kept} and got["user"] == "h"


def test_server_stats_count_every_tenant_and_user(sec: SecureStack) -> None:
    with sec.http(ADMIN_KEY) as admin:
        before = admin.get("/admin/stats").json()
        for i in range(3):
            with sec.http(f"sk-stats-tenant-{i}-77d2") as http:
                for user in ("a", "b"):
                    assert http.post("/memories", json={"user": user, "text": "hi"}).is_success
        after = admin.get("/admin/stats").json()
    assert after["object"] == "admin.stats"
    assert (after["tenants"] - before["tenants"], after["users"] - before["users"]) == (3, 6)


def test_keys_never_reach_logs_or_stored_data(sec: SecureStack) -> None:
    """Runs last in tests/security (file order): every key any of its tests used."""
    gateway_log = (sec.data / "logs" / "gateway.log").read_bytes()
    assert b"request_id=" in gateway_log and b"route=/v1/memories" in gateway_log
    assert len(sec.keys) >= 3 and any("memory" in p.parts for p in sec.data.rglob("*"))
    assert leaked_keys(sec.keys, sec.data) == []
