"""The embedded engine's search pool runs as many threads as the settings say, each time
the store is opened: the engine would otherwise keep the count a shard was last given."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Opens the store as the service does, runs one search, and prints how many of the
# process's threads belong to the engine's search pool (a fresh process: none linger).
COUNT_POOL = """
import os, sys
from bionic_memory.__main__ import open_store
from bionic_memory.config import MemorySettings
from bionic_memory.store.base import Point, Where

settings = MemorySettings(data_dir=sys.argv[1], dimension=4, search_threads=int(sys.argv[2]))
store = open_store(settings)
store.upsert([Point("00000000-0000-0000-0000-000000000001", {"tenant": "t"}, [1.0, 0, 0, 0])])
assert len(store.search(Where(tenant="t"), [1.0, 0.0, 0.0, 0.0], 1)) == 1
names = [open(f"/proc/self/task/{task}/comm").read() for task in os.listdir("/proc/self/task")]
print(sum(name.startswith("edge-search") for name in names))
store.close()
"""


def pool_threads(folder: Path, setting: int) -> int:
    out = subprocess.run(
        [sys.executable, "-c", COUNT_POOL, str(folder), str(setting)],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout)


def test_the_search_pool_has_the_configured_threads_on_every_open(tmp_path: Path) -> None:
    assert pool_threads(tmp_path, 3) == 3  # a new shard
    assert pool_threads(tmp_path, 1) == 1  # the same shard reopened with another count
    assert pool_threads(tmp_path, 0) == len(os.sched_getaffinity(0))  # one per CPU
