"""Sparse node features: a CSR tensor from the loader to the first layer's product.

Bag-of-words features (Cora 98.7%, coauthor-cs 99.1% zeros) are stored as a torch
``sparse_csr`` tensor when a dataset is loaded with ``sparse_features=True``.  Every
step up to the first product keeps them sparse and computes what the dense path
computes, up to float rounding:

* :func:`dropout` draws the *same* mask ``F.dropout`` would draw on the dense tensor
  (same generator draws, same values at the stored entries; an implicit zero stays 0);
* a quantizer acts on the stored values: ``x̂ = fq(x)`` element-wise, and an implicit
  zero becomes ``fq(0)``, which is 0 whenever 0 is on the grid (an integer zero point,
  METHOD.md §1) — otherwise (bit truncation that shifts the zero code) the constant is
  added back as a rank-one term (:func:`quantized_product`);
* range statistics see the implicit zeros: :func:`aminmax`, :func:`moments_skewness`,
  :func:`values_at` (a uniform sample of the whole tensor, zeros included);
* :func:`csr_matmul` is ``x̂ @ W`` with autograd to ``W`` (through the transposed pattern,
  built once per pattern) and, when the quantized values carry a gradient (QLR's α), to
  the stored values (the sampled product ``(G·Wᵀ)`` at the stored entries).

Only models that declare ``sparse_input = True`` receive the CSR tensor; the others get
:func:`densify` of it from the training loop.
"""
from __future__ import annotations

import struct
import warnings
from typing import Callable, Dict, Tuple

import numba
import numpy as np
import torch
from torch import Tensor
import torch.nn.functional as F


def is_sparse(x: object) -> bool:
    """Whether ``x`` is a sparse CSR tensor (the layout sparse features use)."""
    return isinstance(x, Tensor) and x.layout == torch.sparse_csr


def densify(x: Tensor) -> Tensor:
    """``x`` as a dense tensor (unchanged if it is dense)."""
    return x.to_dense() if is_sparse(x) else x


def features_for(model: object, x: Tensor) -> Tensor:
    """The features as ``model`` takes them: CSR only if it declares ``sparse_input``."""
    return x if getattr(model, "sparse_input", False) else densify(x)


def to_csr(x: Tensor) -> Tensor:
    """A dense 2-D float tensor as CSR, its zeros left out (``Tensor.to_sparse_csr`` took 11 s on
    coauthor-cs's 18,333 x 6,805 features; this takes a fraction of a second)."""
    if x.dim() != 2:
        raise ValueError(f"sparse features must be a 2-D [nodes, features] tensor, got shape {tuple(x.shape)}")
    a = x.detach().contiguous().numpy()
    rows, cols = np.nonzero(a)  # row-major order: sorted by row, then column
    crow = np.zeros(a.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=a.shape[0]), out=crow[1:])
    return csr_tensor(torch.from_numpy(crow), torch.from_numpy(cols.astype(np.int64)),
                      torch.from_numpy(a[rows, cols]), tuple(a.shape))


def csr_tensor(crow: Tensor, col: Tensor, values: Tensor, size: Tuple[int, int]) -> Tensor:
    """``torch.sparse_csr_tensor`` without its "support is in beta" warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, values, size=size)


def with_values(x: Tensor, values: Tensor) -> Tensor:
    """The CSR pattern of ``x`` with other stored values (index tensors shared, not copied)."""
    return csr_tensor(x.crow_indices(), x.col_indices(), values, tuple(x.shape))


def implicit_zeros(x: Tensor) -> int:
    """How many entries of CSR ``x`` are not stored (each is 0)."""
    return x.numel() - x.values().numel()


# -- range statistics over the whole tensor --------------------------------------


def aminmax(x: Tensor) -> Tuple[Tensor, Tensor]:
    """``torch.aminmax`` of the whole tensor; for CSR the implicit zeros count (min ≤ 0 ≤ max then)."""
    if not is_sparse(x):
        return torch.aminmax(x.detach())
    v = x.values().detach()
    if v.numel() == 0:
        z = torch.zeros((), dtype=v.dtype)
        return z, z.clone()
    mn, mx = torch.aminmax(v)
    if implicit_zeros(x):
        mn, mx = torch.clamp(mn, max=0.0), torch.clamp(mx, min=0.0)
    return mn, mx


def moments_skewness(x: Tensor) -> float:
    """Fisher–Pearson skewness m3 / m2^{3/2} of the whole CSR tensor, its implicit zeros included
    (float64; 0 for a constant tensor)."""
    v = x.values().detach().double()
    n, nz = x.numel(), implicit_zeros(x)
    mean = v.sum() / n
    d = v - mean
    m2 = (d.square().sum() + nz * mean * mean) / n
    if float(m2) <= 0.0:
        return 0.0
    m3 = (d.pow(3).sum() - nz * mean.pow(3)) / n
    return float(m3 / m2.pow(1.5))


@numba.njit(cache=True, nogil=True)
def _values_at_kernel(crow, col, val, n_cols, flat, out):  # pragma: no cover - compiled
    for p in range(flat.size):
        r = flat[p] // n_cols
        c = flat[p] - r * n_cols
        lo, hi = crow[r], crow[r + 1]
        while lo < hi:  # binary search for column c among the row's sorted columns
            mid = (lo + hi) // 2
            if col[mid] < c:
                lo = mid + 1
            else:
                hi = mid
        out[p] = val[lo] if lo < crow[r + 1] and col[lo] == c else 0.0


def values_at(x: Tensor, flat: Tensor) -> Tensor:
    """The entries of CSR ``x`` at flat (row-major) indices ``flat``: the stored value, or 0."""
    v = x.values().detach().contiguous()
    out = np.empty(flat.numel(), dtype=v.numpy().dtype)
    _values_at_kernel(x.crow_indices().numpy(), x.col_indices().numpy(), v.numpy(), x.shape[1],
                      flat.contiguous().numpy().astype(np.int64, copy=False), out)
    return torch.from_numpy(out)


# -- dropout: the dense mask at the stored entries ---------------------------------
#
# On the CPU, with MKL, ``Tensor.bernoulli_(p)`` takes one 32-bit draw r from the torch generator
# and fills element i from MKL's MCG31m1 stream seeded with r, skipped ahead to i
# (``bernoulli_scalar_kernel``): x_0 = r mod m (1 if 0), x_i = a^i·x_0 mod m, element i is
# 1 iff float32(x_i/m) < float32(p) (the rounding measured against bernoulli_ on 2.5e9 elements:
# comparing in float64, or rounding x_i before dividing, each missed a few).  So the dense mask at the stored entries is computable without drawing the
# other 99%: one modular multiplication per stored entry.  The first call checks the
# emulation against ``bernoulli_`` itself; another build (no MKL) falls back to the dense mask.

_MCG_M = 2147483647  # 2^31 − 1
_MCG_A = 1132489760
_POW_TABLE = 1 << 16


@numba.njit(cache=True, nogil=True)
def _mulmod(a, b):  # pragma: no cover - compiled
    return (a * b) % 2147483647


@numba.njit(cache=True, nogil=True)
def _powmod(base, e):  # pragma: no cover - compiled
    r = np.int64(1)
    b = base % 2147483647
    while e > 0:
        if e & 1:
            r = _mulmod(r, b)
        b = _mulmod(b, b)
        e >>= 1
    return r


@numba.njit(cache=True, nogil=True)
def _bernoulli_at_kernel(seed, flat, p, table, out):  # pragma: no cover - compiled
    """``out[k]`` = element ``flat[k]`` (ascending) of MKL's MCG31 Bernoulli(p) stream seeded with ``seed``."""
    x = seed % 2147483647
    if x == 0:
        x = 1
    pf = np.float32(p)
    pos = np.int64(0)
    for k in range(flat.size):
        d = flat[k] - pos
        if d < table.size:
            x = _mulmod(x, table[d])
        else:
            x = _mulmod(x, _powmod(1132489760, d))
        pos = flat[k]
        out[k] = 1.0 if np.float32(x / 2147483647.0) < pf else 0.0


_TABLE: list = []
#: None until the first sparse dropout checks the emulation; then whether it matches this build
_EMULATION_OK: list = [None]


def _pow_table() -> np.ndarray:
    if not _TABLE:
        t = np.empty(_POW_TABLE, dtype=np.int64)
        t[0] = 1
        for i in range(1, _POW_TABLE):
            t[i] = t[i - 1] * _MCG_A % _MCG_M
        _TABLE.append(t)
    return _TABLE[0]


def _next_draw() -> int:
    """The next 32-bit draw of torch's default CPU generator (its mt19937), without taking it."""
    b = torch.get_rng_state().numpy().tobytes()
    left, = struct.unpack_from("<i", b, 8)
    nxt, = struct.unpack_from("<Q", b, 16)
    key = np.frombuffer(b, dtype=np.uint64, count=624, offset=24).astype(np.uint32)
    mt = np.random.MT19937()
    mt.state = {"bit_generator": "MT19937", "state": {"key": key, "pos": 624 if left == 1 else int(nxt)}}
    return int(mt.random_raw())


def _bernoulli_at(flat: np.ndarray, p: float) -> np.ndarray:
    """The values ``torch.empty(n).bernoulli_(p)`` would put at the ascending flat indices ``flat``,
    taking the generator draw it takes."""
    seed = _next_draw()
    torch.empty(1).bernoulli_(p)  # takes that draw, as the dense call would
    out = np.empty(flat.size, dtype=np.float32)
    _bernoulli_at_kernel(seed, flat, p, _pow_table(), out)
    return out


def _emulation_matches() -> bool:
    """Whether :func:`_bernoulli_at` reproduces ``bernoulli_`` in this torch build (checked once,
    on 20,000 elements at scattered indices; the generator state is restored)."""
    if _EMULATION_OK[0] is None:
        state = torch.get_rng_state()
        try:
            ref = torch.empty(200_000).bernoulli_(0.4).numpy()
            torch.set_rng_state(state)
            flat = np.arange(3, 200_000, 10, dtype=np.int64)
            same = np.array_equal(_bernoulli_at(flat, 0.4), ref[flat])
        except Exception:  # noqa: BLE001 - an unexpected generator layout: use the dense mask
            same = False
        finally:
            torch.set_rng_state(state)
        _EMULATION_OK[0] = same
        if not same:
            warnings.warn("sparse dropout: this torch build's bernoulli_ is not MKL's MCG31 stream; drawing the "
                          "dense mask instead (same values, slower)", RuntimeWarning, stacklevel=3)
    return bool(_EMULATION_OK[0])


def flat_indices(x: Tensor) -> np.ndarray:
    """Row-major flat indices of the stored entries of CSR ``x`` (ascending)."""
    crow = x.crow_indices().numpy()
    rows = np.repeat(np.arange(x.shape[0], dtype=np.int64), np.diff(crow))
    return rows * x.shape[1] + x.col_indices().numpy()


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """``F.dropout(x, p, training)``; for CSR ``x`` the same values at the stored entries, drawn
    from the same generator draws as the dense call (so a run gives the same numbers either way)."""
    if not is_sparse(x):
        return F.dropout(x, p, training)
    if not training or p == 0 or x.numel() == 0:
        return x
    v = x.values()
    if p == 1:
        return with_values(x, v * torch.zeros((), dtype=v.dtype))
    flat = flat_indices(x)
    if _emulation_matches():
        noise = torch.from_numpy(_bernoulli_at(flat, 1 - p))
    else:
        noise = torch.empty(x.shape, dtype=v.dtype).bernoulli_(1 - p).view(-1)[torch.from_numpy(flat)]
    noise = noise.to(v.dtype).div_(1 - p)  # F.dropout: noise.bernoulli_(1 − p).div_(1 − p), then x·noise
    return with_values(x, v * noise)


# -- the product ------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _sampled_rows_kernel(crow, col, G, W, out):  # pragma: no cover - compiled
    """``out[e] = (G·Wᵀ)[i, j]`` for every stored entry e = (i, j): each a float32 sum over k = 0..K−1
    in that order (a multiply, then an add: numba contracts nothing without fastmath).

    A row's entries are taken four at a time (then one), their four sums side by side: each sum keeps
    its own order, so every value is the one-entry loop's bit for bit (:func:`_sampled_rows_reference`,
    ``tests/test_sparse.py``), but the core runs four independent add chains instead of waiting on one
    (1.2-2.6x on the Cora, CiteSeer, Amazon-Photo and Coauthor-CS patterns at K = 16-256,
    ``benchmarks/sparse_inputs.py --sampled``; eight chains were no faster)."""
    K = G.shape[1]
    zero = np.float32(0.0)
    for i in range(crow.size - 1):
        e = crow[i]
        end = crow[i + 1]
        while e + 4 <= end:
            j0, j1, j2, j3 = col[e], col[e + 1], col[e + 2], col[e + 3]
            a0 = a1 = a2 = a3 = zero
            for k in range(K):
                gk = G[i, k]
                a0 += gk * W[j0, k]
                a1 += gk * W[j1, k]
                a2 += gk * W[j2, k]
                a3 += gk * W[j3, k]
            out[e], out[e + 1], out[e + 2], out[e + 3] = a0, a1, a2, a3
            e += 4
        while e < end:
            out[e] = _sampled_dot(G, W, i, col[e], K)
            e += 1


@numba.njit(cache=True, nogil=True, inline="always")
def _sampled_dot(G, W, i, j, K):  # pragma: no cover - compiled
    acc = np.float32(0.0)
    for k in range(K):
        acc += G[i, k] * W[j, k]
    return acc


@numba.njit(cache=True, nogil=True)
def _sampled_rows_reference(crow, col, G, W, out):  # pragma: no cover - compiled
    """:func:`_sampled_rows_kernel` one entry at a time (the order its values must equal)."""
    K = G.shape[1]
    for i in range(crow.size - 1):
        for e in range(crow[i], crow[i + 1]):
            out[e] = _sampled_dot(G, W, i, col[e], K)


#: transposed patterns, keyed by the index tensors' storage (the tensors are kept so it is not reused)
_TRANSPOSED: Dict[tuple, tuple] = {}
_TRANSPOSED_MAX = 8


def _transposed(x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """(crow, col, perm) of xᵀ in CSR: ``xᵀ``'s stored values are ``x.values()[perm]``."""
    crow, col = x.crow_indices(), x.col_indices()
    key = (crow.data_ptr(), col.data_ptr(), col.numel(), tuple(x.shape))
    hit = _TRANSPOSED.get(key)
    if hit is not None:
        return hit[2:]
    c = col.numpy()
    rows = np.repeat(np.arange(x.shape[0], dtype=np.int64), np.diff(crow.numpy()))
    perm = np.argsort(c, kind="stable")
    crow_t = np.zeros(x.shape[1] + 1, dtype=np.int64)
    np.cumsum(np.bincount(c, minlength=x.shape[1]), out=crow_t[1:])
    if len(_TRANSPOSED) >= _TRANSPOSED_MAX:
        _TRANSPOSED.pop(next(iter(_TRANSPOSED)))
    entry = (crow, col, torch.from_numpy(crow_t), torch.from_numpy(rows[perm]), torch.from_numpy(perm))
    _TRANSPOSED[key] = entry
    return entry[2:]


class _CSRMatmul(torch.autograd.Function):
    """``csr(pattern of x, values) @ w`` with gradients to ``w`` and (if needed) to ``values``."""

    @staticmethod
    def forward(ctx, values: Tensor, w: Tensor, x: Tensor) -> Tensor:
        ctx.x = x
        ctx.save_for_backward(values, w)
        return with_values(x, values) @ w

    @staticmethod
    def backward(ctx, g: Tensor):
        values, w = ctx.saved_tensors
        x = ctx.x
        gv = gw = None
        if ctx.needs_input_grad[1]:
            crow_t, col_t, perm = _transposed(x)
            xt = csr_tensor(crow_t, col_t, values[perm], (x.shape[1], x.shape[0]))
            gw = xt @ g
        if ctx.needs_input_grad[0]:
            gc = g.contiguous()
            out = np.empty(values.numel(), dtype=np.float32)
            _sampled_rows_kernel(x.crow_indices().numpy(), x.col_indices().numpy(), gc.numpy(),
                                 w.detach().contiguous().numpy(), out)
            gv = torch.from_numpy(out).to(values.dtype)
        return gv, gw, None


def csr_matmul(x: Tensor, values: Tensor, w: Tensor) -> Tensor:
    """``x̂ @ w`` for the CSR pattern of ``x`` with stored values ``values`` (float32, CPU)."""
    if x.requires_grad:
        raise ValueError("sparse features are a constant input: a CSR tensor that requires grad is not supported")
    return _CSRMatmul.apply(values, w, x)


def quantized_product(x: Tensor, quantize: Callable[[Tensor], Tensor], w: Tensor) -> Tensor:
    """``quantize(x) @ w`` for CSR ``x`` with an element-wise ``quantize``: the stored values are
    quantized, and an implicit zero becomes ``quantize(0)``, added as the rank-one term
    ``quantize(0)·𝟙·(𝟙ᵀw)`` when it is not 0 (gradients flow through both)."""
    v_hat = quantize(x.values())
    zero_hat = quantize(torch.zeros(1, dtype=x.values().dtype))
    if float(zero_hat) == 0.0:
        # 0 on the grid: ∂x̂/∂s there is (q − z) − 0 = 0 too (with truncation, c·step − z = 0), so the
        # implicit zeros add nothing to the value or to any gradient
        return csr_matmul(x, v_hat, w)
    return csr_matmul(x, v_hat - zero_hat, w) + zero_hat * w.sum(0)
