"""Train/validation/test splits: seeded per-class random splits and fixed split columns."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

Masks = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def random_split(
    labels: torch.Tensor | np.ndarray,
    seed: int,
    train_per_class: int = 20,
    val_per_class: Optional[int] = None,
    num_val: Optional[int] = None,
    num_test: Optional[int] = None,
) -> Masks:
    """Boolean train/val/test masks drawn with ``numpy.random.default_rng(seed)``.

    Only labelled nodes (label >= 0) are eligible.  Train takes ``train_per_class``
    nodes of each class; validation takes ``val_per_class`` nodes of each class
    from the rest, or else ``num_val`` nodes of the rest; test takes ``num_test``
    of what remains, or all of it when ``num_test`` is None.  On graphs too small
    for the requested sizes the counts are clipped: train takes at most half of a
    class (at least one node), validation at most two thirds of what train leaves
    (half when only ``num_val`` is unset and no per-class count is given).
    """
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    n = y.shape[0]
    rng = np.random.default_rng(seed)
    perm = rng.permutation(np.flatnonzero(y >= 0))
    classes = np.unique(y[perm])

    def per_class(pool: np.ndarray, k: int) -> np.ndarray:
        picked = []
        for c in classes:
            members = pool[y[pool] == c]
            picked.append(members[: min(k, max(1, members.size // 2))])
        return np.concatenate(picked) if picked else np.empty(0, dtype=np.int64)

    train = per_class(perm, train_per_class)
    rest = perm[~np.isin(perm, train)]
    if val_per_class is not None:
        val = per_class(rest, val_per_class)
        rest = rest[~np.isin(rest, val)]
    else:
        k = rest.size // 2 if num_val is None else min(num_val, 2 * rest.size // 3)
        val, rest = rest[:k], rest[k:]
    test = rest if num_test is None else rest[: min(num_test, rest.size)]
    return index_to_mask(train, n), index_to_mask(val, n), index_to_mask(test, n)


def index_to_mask(index: np.ndarray | torch.Tensor, n: int) -> torch.Tensor:
    """A boolean mask of length ``n`` that is True at ``index``."""
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.as_tensor(np.asarray(index), dtype=torch.long)] = True
    return mask


def fixed_split(
    train: torch.Tensor, val: torch.Tensor, test: torch.Tensor, index: int
) -> Masks:
    """Column ``index`` of [N, K] fixed split masks (a 1-D mask is the only split)."""
    if train.dim() == 1:
        if index != 0:
            raise ValueError(f"split_index={index}, but this dataset ships a single split")
        return train.bool(), val.bool(), test.bool()
    k = train.shape[1]
    if not 0 <= index < k:
        raise ValueError(f"split_index={index} out of range: this dataset ships {k} splits (0..{k - 1})")
    return train[:, index].bool(), val[:, index].bool(), test[:, index].bool()
