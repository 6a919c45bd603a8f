"""Degree-Quant baseline (Tailor, Fernandez-Marques & Lane, ICLR 2021, arXiv 2008.05000).

METHOD.md §4: percentile ranges estimated on a random sample of the tensor and
smoothed with momentum; a gradient-clipping STE (zero gradient outside the range);
stochastic protective masking of high in-degree nodes during training, with
``p_i = p_min + (p_max − p_min)·F(deg_in(i))``, F the empirical CDF of in-degrees.
Masked nodes keep their ``message``/``aggregate``/``update`` tensors in full
precision; evaluation quantizes every node.

One mask per training forward pass, shared by every DQ quantizer of the model (all
roles, all layers), as in DQ's reference code, where the model draws the mask once and
hands it to every layer: the n-th training call of each quantizer draws its mask from a
generator seeded by (the global torch seed at construction, n), so the quantizers of one
model, each called once per forward pass, protect the same nodes in the same pass.

A tensor that is mostly zeros (sparse bag-of-words inputs: Cora's are >98% zeros, >99%
after dropout) has a percentile range of [0, 0], which maps every value to 0 and
collapses the model (13-32% on Cora at INT4 in this suite's earlier records).
DQ's reference code (``get_qparams`` in ``dq/quantization.py``) falls back to scale 1 for an
empty range, which keeps only integer-valued features; ``fallback="minmax"`` (default)
observes the batch's min/max instead when its percentile range is empty;
``fallback="none"`` keeps the empty range (the earlier behaviour).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from bench_suite.quant.base import NODE_ROLES
from bench_suite.quant.ranges import TrackedRangeQuantizer
from bench_suite.registry import QUANTIZERS
from bench_suite.sparse import aminmax, implicit_zeros, is_sparse, values_at

#: Percentile p per bit width (p-th and (1−p)-th quantiles); INT2's is the suite's choice.
DEFAULT_PERCENTILE: Dict[int, float] = {8: 0.001, 4: 0.01, 2: 0.05}
#: Protective-mask probabilities (p_min, p_max) per bit width; INT2's pair is the suite's choice.
DEFAULT_MASK_PROB: Dict[int, Tuple[float, float]] = {8: (0.0, 0.1), 4: (0.1, 0.2), 2: (0.2, 0.3)}
#: What to observe when a batch's percentile range is empty (lo == hi): see the module docstring.
FALLBACKS: Tuple[str, ...] = ("minmax", "none")


def degree_cdf(in_degrees: Tensor) -> Tensor:
    """Empirical CDF of the in-degrees evaluated at each node: F(d_i) = #{j: d_j ≤ d_i} / n."""
    d = in_degrees.reshape(-1).to(torch.float64)
    srt, _ = torch.sort(d)
    return torch.searchsorted(srt, d, right=True).to(torch.float32) / max(d.numel(), 1)


def sample_quantiles(x: Tensor, p: float, sample_size: int) -> Tuple[Tensor, Tensor]:
    """The p-th and (1−p)-th quantiles of at most ``sample_size`` elements drawn uniformly (global RNG).

    Linear-time selection, no sort of the whole tensor: the order statistics ``k_lo``/``k_hi``
    of the sample are those ``torch.kthvalue`` returns (exact values, so the result does not
    depend on the method).  A float CPU sample is selected with one ``np.partition`` for both
    (~3x faster than two ``kthvalue`` calls; a deep GNN calls this ~100 times a step).

    A sparse CSR ``x`` is sampled over all its entries, implicit zeros included (the same random
    indices, hence the same sample, as its dense form); without sampling its quantiles are exact
    (:func:`sparse_quantiles`).
    """
    if is_sparse(x):
        if x.numel() <= sample_size:
            return sparse_quantiles(x, p)
        v = values_at(x, torch.randint(0, x.numel(), (sample_size,)))
    else:
        v = x.detach().reshape(-1)
    if v.numel() > sample_size:
        idx = torch.randint(0, v.numel(), (sample_size,), device=v.device)
        if v.device.type == "cpu" and v.dtype in _NP_SELECT:
            v = torch.from_numpy(v.contiguous().numpy()[idx.numpy()])
        else:
            v = v[idx]
    k_lo, k_hi = _order_ranks(v.numel(), p)
    if v.device.type == "cpu" and v.dtype in _NP_SELECT and not torch.isnan(v).any():
        part = np.partition(v.contiguous().numpy(), (k_lo - 1, k_hi - 1))
        return torch.tensor(part[k_lo - 1], dtype=v.dtype), torch.tensor(part[k_hi - 1], dtype=v.dtype)
    return torch.kthvalue(v, k_lo).values, torch.kthvalue(v, k_hi).values


def _order_ranks(n: int, p: float) -> Tuple[int, int]:
    """The 1-based ranks of the p-th and (1−p)-th quantiles among n values (as ``kthvalue`` takes them)."""
    return (min(max(int(round(p * (n - 1))) + 1, 1), n), min(max(int(round((1.0 - p) * (n - 1))) + 1, 1), n))


def sparse_quantiles(x: Tensor, p: float) -> Tuple[Tensor, Tensor]:
    """The p-th and (1−p)-th quantiles of every entry of CSR ``x`` (the same order statistics as
    :func:`sample_quantiles` of its dense form), counting the implicit zeros instead of listing them:
    sorted, the entries are the negative stored values, the zeros, then the other stored values."""
    v = torch.sort(x.values().detach().reshape(-1)).values
    nz = implicit_zeros(x)
    neg = int((v < 0).sum())

    def kth(k: int) -> Tensor:
        if k <= neg:
            return v[k - 1].clone()
        if k <= neg + nz:
            return torch.zeros((), dtype=v.dtype)
        return v[k - 1 - nz].clone()

    return tuple(kth(k) for k in _order_ranks(x.numel(), p))


#: dtypes :func:`sample_quantiles` selects with numpy (elsewhere: ``torch.kthvalue``).
_NP_SELECT = (torch.float32, torch.float64)

#: The last protective mask drawn: [key, graph, mask].  Every DQ quantizer of a model draws the same
#: mask in a pass (same seed, same call count, same probabilities), so the first one draws it
#: and the others reuse it (one ``bernoulli`` a pass instead of one per node-level quantizer).
_LAST_MASK: list = [None, None, None]


@QUANTIZERS.register("dq")
class DegreeQuantQuantizer(TrackedRangeQuantizer):
    """Degree-Quant (Tailor et al., ICLR 2021): percentile ranges, clipped STE, protective masking.

    ``percentile``/``p_min``/``p_max`` default (None) to the per-bit-width values of
    METHOD.md §4; ``sample_size`` bounds the elements used to estimate the percentiles.
    """

    clip_grad = True

    def __init__(self, bits: int, role: str, percentile: Optional[float] = None, momentum: float = 0.01,
                 sample_size: int = 4096, p_min: Optional[float] = None, p_max: Optional[float] = None,
                 fallback: str = "minmax") -> None:
        self.validate_params(bits=bits, percentile=percentile, momentum=momentum, sample_size=sample_size,
                             p_min=p_min, p_max=p_max, fallback=fallback)
        super().__init__(bits, role, momentum=momentum)
        self.percentile = DEFAULT_PERCENTILE[bits] if percentile is None else float(percentile)
        lo, hi = DEFAULT_MASK_PROB[bits]
        self.p_min = lo if p_min is None else float(p_min)
        self.p_max = hi if p_max is None else float(p_max)
        self.sample_size = int(sample_size)
        self.fallback = fallback
        self._mask_seed = torch.initial_seed()  # with the call count, seeds the shared protective mask
        self._mask_calls = 0
        self._cdf_key: Optional[Tuple[int, int, int]] = None
        self._cdf: Optional[Tensor] = None

    @staticmethod
    def validate_params(bits: int = 8, percentile: Optional[float] = None, momentum: float = 0.01,
                        sample_size: int = 4096, p_min: Optional[float] = None,
                        p_max: Optional[float] = None, fallback: str = "minmax") -> None:
        if bits not in DEFAULT_PERCENTILE:
            raise ValueError(f"bits={bits!r} is not valid for dq; valid: {', '.join(map(str, DEFAULT_PERCENTILE))}")
        if percentile is not None and not 0.0 <= float(percentile) < 0.5:
            raise ValueError(f"percentile={percentile!r} is not valid; use 0 <= percentile < 0.5 (or None for "
                             f"the default {DEFAULT_PERCENTILE[bits]} at {bits} bits)")
        if not 0.0 < float(momentum) <= 1.0:
            raise ValueError(f"momentum={momentum!r} is not valid; use 0 < momentum <= 1")
        if not isinstance(sample_size, int) or isinstance(sample_size, bool) or sample_size < 2:
            raise ValueError(f"sample_size={sample_size!r} is not valid; use an integer >= 2")
        lo, hi = DEFAULT_MASK_PROB[bits]
        lo = lo if p_min is None else float(p_min)
        hi = hi if p_max is None else float(p_max)
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"masking probabilities p_min={lo}, p_max={hi} are not valid; "
                             "use 0 <= p_min <= p_max <= 1")
        if fallback not in FALLBACKS:
            raise ValueError(f"dq fallback={fallback!r} is not valid; valid: {', '.join(FALLBACKS)} (minmax: an "
                             "empty percentile range [0, 0] is replaced by the batch's min/max; none: kept)")

    def observe(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        lo, hi = sample_quantiles(x, self.percentile, self.sample_size)
        if self.fallback == "minmax" and bool(lo == hi):
            lo, hi = aminmax(x)
        return lo, hi

    def protective_mask(self, graph: Any) -> Tensor:
        """The nodes kept in full precision in this training call (shared across the model's quantizers).

        A function of (seed, call count, p_i): drawn from a generator seeded by the first two, so
        the quantizers of one model, called once each per pass, draw the same mask; it is drawn
        once and reused (:data:`_LAST_MASK`).  Read-only: callers must not modify it.
        """
        seed = (self._mask_seed * 1_000_003 + self._mask_calls) % (1 << 63)
        self._mask_calls += 1
        key = (seed, self.p_min, self.p_max, graph.num_nodes(), graph.num_edges())
        if _LAST_MASK[0] != key or _LAST_MASK[1] is not graph:  # the graph itself, not its id (ids are reused)
            gen = torch.Generator().manual_seed(seed)
            _LAST_MASK[:] = [key, graph, torch.bernoulli(self.mask_probability(graph), generator=gen).bool()]
        return _LAST_MASK[2]

    def mask_probability(self, graph: Any) -> Tensor:
        """``p_i`` for every node of ``graph`` (cached for the last graph seen)."""
        key = (id(graph), graph.num_nodes(), graph.num_edges())
        if key != self._cdf_key:
            self._cdf = degree_cdf(graph.in_degrees())
            self._cdf_key = key
        return self.p_min + (self.p_max - self.p_min) * self._cdf

    def forward(self, x: Tensor, graph: Any = None) -> Tensor:
        if self.training:
            self.update_range(x)
        keep = None
        if (self.training and graph is not None and self.role in NODE_ROLES and self.p_max > 0
                and x.dim() >= 1 and x.shape[0] == graph.num_nodes()):
            keep = self.protective_mask(graph).to(x.device)
            if x.dtype != torch.float32 or x.device.type != "cpu":
                return torch.where(keep.view(-1, *([1] * (x.dim() - 1))), x, self.quantize(x))
        return self.quantize(x, keep)  # kept (masked) rows pass through inside the fused kernel

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, percentile={self.percentile}, p_min={self.p_min}, p_max={self.p_max}, "
                f"sample_size={self.sample_size}, fallback={self.fallback!r}")
