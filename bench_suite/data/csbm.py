"""Contextual stochastic block model (CSBM): a generated graph with controlled homophily."""
from __future__ import annotations

from typing import Tuple

import numpy as np


def generate_csbm(
    nodes: int,
    classes: int,
    avg_degree: float,
    homophily: float,
    feature_dim: int,
    signal: float,
    seed: int,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(src, dst, features, labels)`` of one CSBM graph, vectorised and deterministic in ``seed``.

    Classes are balanced.  ``round(nodes * avg_degree / 2)`` undirected edges are
    drawn; a fraction ``homophily`` of them joins two distinct nodes of the same
    class, the others two nodes of different classes; each edge's first endpoint
    is uniform over all nodes.  Duplicates are dropped (a tiny fraction on sparse
    graphs).  ``src``/``dst`` hold each undirected edge once (``src < dst``).
    Features are ``signal * mu[label] + N(0, I)`` with ``mu`` random unit vectors,
    one per class.
    """
    if classes < 2:
        raise ValueError(f"csbm needs classes >= 2, got {classes}")
    if nodes < 2 * classes:
        raise ValueError(f"csbm needs nodes >= 2 * classes, got nodes={nodes}, classes={classes}")
    if not 0.0 <= homophily <= 1.0:
        raise ValueError(f"csbm homophily must be in [0, 1], got {homophily}")
    if not 0.0 <= avg_degree < nodes - 1:
        raise ValueError(f"csbm avg_degree must be in [0, nodes - 1), got {avg_degree}")
    if feature_dim < 1:
        raise ValueError(f"csbm feature_dim must be >= 1, got {feature_dim}")

    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(nodes) % classes).astype(np.int64)
    order = np.argsort(labels, kind="stable")  # node ids grouped by class
    counts = np.bincount(labels, minlength=classes)
    start = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.empty(nodes, dtype=np.int64)  # position of a node inside its class block
    rank[order] = np.arange(nodes) - start[labels[order]]

    m = int(round(nodes * avg_degree / 2))
    m_in = int(round(homophily * m))

    # intra-class: partner uniform over the other members of u's class
    u_in = rng.integers(0, nodes, m_in)
    c = labels[u_in]
    j = (rng.random(m_in) * (counts[c] - 1)).astype(np.int64)
    j += j >= rank[u_in]
    v_in = order[start[c] + j]

    # inter-class: partner uniform over the nodes outside u's class block
    u_out = rng.integers(0, nodes, m - m_in)
    c = labels[u_out]
    j = (rng.random(m - m_in) * (nodes - counts[c])).astype(np.int64)
    j += (j >= start[c]) * counts[c]
    v_out = order[j]

    u = np.concatenate((u_in, u_out))
    v = np.concatenate((v_in, v_out))
    lo, hi = np.minimum(u, v), np.maximum(u, v)
    key = np.unique(lo * nodes + hi)
    src, dst = key // nodes, key % nodes

    means = rng.standard_normal((classes, feature_dim))
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    features = rng.standard_normal((nodes, feature_dim), dtype=np.float32)
    features += (signal * means[labels]).astype(np.float32)
    return src, dst, features, labels
