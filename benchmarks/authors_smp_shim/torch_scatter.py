"""Pure-PyTorch stand-in for the part of ``torch_scatter`` 2.1.x that the SMP authors' code uses.

Only for ``benchmarks/authors_smp.py``, which puts this folder on PYTHONPATH of the
subprocess that runs the authors' unmodified code.  Never imported by bench_suite or
its tests.  ``torch_scatter``'s own ``scatter_sum`` (scatter.py, version 2.1.2) is a
pure-Python function over ``Tensor.scatter_add_``; this is the same computation.
"""
from typing import Optional

import torch

__version__ = "2.1.2+shim"


def broadcast(src: torch.Tensor, other: torch.Tensor, dim: int) -> torch.Tensor:
    if dim < 0:
        dim = other.dim() + dim
    if src.dim() == 1:
        for _ in range(0, dim):
            src = src.unsqueeze(0)
    for _ in range(src.dim(), other.dim()):
        src = src.unsqueeze(-1)
    return src.expand(other.size())


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim: int = -1,
                out: Optional[torch.Tensor] = None,
                dim_size: Optional[int] = None) -> torch.Tensor:
    index = broadcast(index, src, dim)
    if out is None:
        size = list(src.size())
        if dim_size is not None:
            size[dim] = dim_size
        elif index.numel() == 0:
            size[dim] = 0
        else:
            size[dim] = int(index.max()) + 1
        out = torch.zeros(size, dtype=src.dtype, device=src.device)
    return out.scatter_add_(dim, index, src)


def scatter_add(src, index, dim=-1, out=None, dim_size=None):
    return scatter_sum(src, index, dim, out, dim_size)


def scatter_mean(src, index, dim=-1, out=None, dim_size=None):
    out = scatter_sum(src, index, dim, out, dim_size)
    dim_size = out.size(dim)
    index_dim = dim if dim >= 0 else index.dim() + dim
    ones = torch.ones(index.size(), dtype=src.dtype, device=src.device)
    count = scatter_sum(ones, index, index_dim, None, dim_size).clamp_(1)
    count = broadcast(count, out, dim)
    return out.true_divide(count) if out.is_floating_point() else out.div_(count, rounding_mode="floor")


def scatter(src, index, dim=-1, out=None, dim_size=None, reduce="sum"):
    if reduce in ("sum", "add"):
        return scatter_sum(src, index, dim, out, dim_size)
    if reduce == "mean":
        return scatter_mean(src, index, dim, out, dim_size)
    raise NotImplementedError(f"torch_scatter shim: reduce={reduce!r} is not provided")
