"""The free space of the memory data folder's disk, checked before each write."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# Writes are refused while the data folder's disk has less free space than this: the
# embedded engine writes through memory maps, and a write that finds the disk full kills
# the whole process (SIGBUS) instead of failing. Its files grow by a few MiB at a time.
MIN_FREE_BYTES = 64 * MIB


class DiskFull(Exception):
    """The data folder's disk is (nearly) full; nothing was changed."""


class DiskGuard:
    """Checks the free space of the store's folder before each write (one statfs call).
    `folder` None: the store is a Qdrant server, whose disk is its own business."""

    def __init__(self, folder: str | None, min_free: int = MIN_FREE_BYTES) -> None:
        self._folder = folder
        self._min_free = min_free
        self._full = False  # logged once when the disk fills, once when space is back

    def check(self) -> None:
        if self._folder is None:
            return
        stat = os.statvfs(self._folder)
        free = stat.f_bavail * stat.f_frsize
        if free >= self._min_free:
            if self._full:
                log.warning("disk space is back (%d MiB free): writes accepted", free // MIB)
                self._full = False
            return
        if not self._full:
            log.error(
                "disk almost full (%d MiB free in %s, writes need %d MiB): refusing writes",
                free // MIB,
                self._folder,
                self._min_free // MIB,
            )
            self._full = True
        raise DiskFull(
            f"no disk space left for memories: {free // MIB} MiB free where the memory "
            f"service keeps its data, writes need {self._min_free // MIB} MiB"
        )
