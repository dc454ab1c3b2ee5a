"""Tenant and user isolation under a seeded random sequence of REST and chat calls: many
keys (tenants), several users each, every memory marked with a token of its own. Whatever
a call returns, or the gateway sends upstream, holds only the caller's own tokens; another
scope's memory ids are 404 for every verb; at the end each scope holds exactly its own."""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict

import httpx

from tests.security.conftest import SecureStack

SEED = 8
STEPS = 160
KEYS = [f"sk-iso-{i}-{'k' * 12}" for i in range(7)]
USERS = ["u0", "u1", "u2"]
TOKEN = re.compile(r"tok\d{4}")
OPS = ["add"] * 4 + ["search"] * 2 + ["chat"] * 2 + ["probe"] * 2 + ["list", "recall", "export"]


def _tokens(text: str) -> set[str]:
    return set(TOKEN.findall(text))


def test_no_call_ever_sees_another_scope(sec: SecureStack) -> None:
    rng = random.Random(SEED)
    owned: dict[tuple[str, str], set[str]] = defaultdict(set)
    ids: dict[tuple[str, str], list[str]] = defaultdict(list)
    clients = {key: sec.http(key) for key in KEYS}
    done: dict[str, int] = defaultdict(int)
    try:
        for step in range(STEPS):
            key, user = rng.choice(KEYS), rng.choice(USERS)
            http: httpx.Client = clients[key]
            mine = owned[(key, user)]
            op = rng.choice(OPS) if mine else "add"
            # A query that names some token, often another scope's.
            all_tokens = sorted(set().union(*owned.values())) or ["tok0000"]
            query = f"what about {rng.choice(all_tokens)}?"
            seen = ""
            if op == "add":
                token = f"tok{step:04d}"
                text = f"Secret {token}: {rng.choice(['tea', 'bike', 'cat', '猫', '🐉'])}."
                added = http.post("/memories", json={"user": user, "text": text})
                assert added.status_code == 201, added.text
                mine.add(token)
                ids[(key, user)].append(added.json()["id"])
            elif op == "search":
                seen = http.post("/memories/search", json={"user": user, "query": query}).text
            elif op == "recall":
                body = {"user": user, "messages": [{"role": "user", "content": query}]}
                preview = http.post("/memories/recall", json=body).json()
                seen = json.dumps([preview["memories"], preview["system_message"]])
            elif op == "list":
                seen = http.get("/memories", params={"user": user, "limit": 100}).text
            elif op == "export":
                seen = http.get("/memories/export", params={"user": user}).text
            elif op == "chat":
                before = len(sec.upstream.requests)
                body = {
                    "model": "recorder",
                    "messages": [{"role": "user", "content": query}],
                    "user": user,
                    "bionic_memory": {"mode": "read_only"},
                }
                assert http.post("/chat/completions", json=body).status_code == 200
                (sent,) = sec.upstream.requests[before:]
                seen = json.dumps([m for m in sent["body"]["messages"] if m["role"] == "system"])
            elif op == "probe":
                others = [s for s in ids if s != (key, user) and ids[s]]
                if not others:
                    continue
                target = rng.choice(ids[rng.choice(others)])
                params = {"user": user}
                assert http.get(f"/memories/{target}", params=params).status_code == 404
                patch = http.patch(f"/memories/{target}", params=params, json={"pinned": True})
                assert patch.status_code == 404
                assert http.delete(f"/memories/{target}", params=params).status_code == 404
            foreign = _tokens(seen) - mine
            assert not foreign, f"step {step} {op} as {key[:8]}/{user} saw {foreign}"
            done[op] += 1
        # Nothing lost, nothing foreign: each scope holds exactly its own tokens.
        for (key, user), tokens in owned.items():
            exported = clients[key].get("/memories/export", params={"user": user}).text
            assert _tokens(exported) == tokens, (key[:8], user)
    finally:
        for client in clients.values():
            client.close()
    # The sequence exercised every kind of call (the seed is fixed: this guards edits).
    assert set(done) == set(OPS) and sum(done.values()) >= STEPS * 0.9
