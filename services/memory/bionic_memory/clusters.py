"""Clustering memories by embedding, cheap enough for the read path.

Vectors are compared by cosine similarity (rows are L2-normalised first). Everything is
deterministic: the same input always gives the same clusters.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

MAX_ITERATIONS = 10


def _normalised(vectors: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    rows = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    normalised: npt.NDArray[np.float32] = rows / np.maximum(norms, 1e-12)
    return normalised


def kmeans_labels(vectors: npt.NDArray[np.floating], k: int) -> npt.NDArray[np.int64]:
    """Spherical k-means with one farthest-point initialisation (no restarts).

    The first row seeds the first cluster (callers pass the most relevant first); each
    further seed is the row least similar to every seed so far. At most
    `MAX_ITERATIONS` Lloyd steps follow. With `k >= len(vectors)` every row is its own
    cluster.
    """
    rows = _normalised(vectors)
    n = len(rows)
    if k >= n:
        return np.arange(n, dtype=np.int64)
    seeds = [0]
    nearest = rows @ rows[0]
    for _ in range(1, k):
        seed = int(np.argmin(nearest))
        seeds.append(seed)
        nearest = np.maximum(nearest, rows @ rows[seed])
    centroids = rows[seeds]
    labels = np.argmax(rows @ centroids.T, axis=1)
    for _ in range(MAX_ITERATIONS):
        for c in range(k):
            members = rows[labels == c]
            if len(members):
                centroids[c] = members.sum(axis=0)
        centroids = _normalised(centroids)
        updated = np.argmax(rows @ centroids.T, axis=1)
        if np.array_equal(updated, labels):
            break
        labels = updated
    result: npt.NDArray[np.int64] = labels.astype(np.int64)
    return result


def near_duplicate_groups(
    vectors: npt.NDArray[np.floating], order: list[int], threshold: float
) -> list[list[int]]:
    """Groups of rows at cosine similarity >= `threshold` to their group's first row.

    Rows are taken in `order` (strongest first, say): each row not yet grouped starts a
    group with every later ungrouped row similar enough to it. Only groups of two or more
    are returned, each led by its representative.
    """
    rows = _normalised(vectors)
    similarity = rows @ rows.T
    grouped = np.zeros(len(rows), dtype=bool)
    groups: list[list[int]] = []
    for i in order:
        if grouped[i]:
            continue
        grouped[i] = True
        members = [j for j in order if not grouped[j] and similarity[i, j] >= threshold]
        if members:
            grouped[members] = True
            groups.append([i, *members])
    return groups
