"""Pure-PyTorch stand-in for the part of ``torch_sparse`` (0.6.x) that the SMP authors' code
and ``torch_geometric`` 2.5.3 (``ToSparseTensor``, ``gcn_norm``) touch on that path.

Only for ``benchmarks/authors_smp.py``, which puts this folder on PYTHONPATH of the
subprocess that runs the authors' unmodified code (no torch-sparse wheel exists for
torch 2.2.1 on the package index this machine reaches; PyPI has only the sdist).
Never imported by bench_suite or its tests.

Semantics follow torch_sparse: a SparseTensor is a row-major sorted COO matrix with an
optional value vector (None means all ones); ``fill_diag`` drops the diagonal and puts
``fill_value`` there (or keeps no value); ``sum(dim=1)`` is the row sum (the row count
when there is no value); ``mul`` by an (N, 1) / (1, M) dense tensor scales rows /
columns; ``matmul`` with a dense matrix is the differentiable sparse-dense product
(sum reduction); ``to_symmetric`` is the union A + A^T with duplicates merged.
Anything else raises.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

__version__ = "0.6.18+shim"


class SparseTensor:
    def __init__(self, row: Optional[Tensor] = None, rowptr: Optional[Tensor] = None,
                 col: Optional[Tensor] = None, value: Optional[Tensor] = None,
                 sparse_sizes: Optional[Tuple[Optional[int], Optional[int]]] = None,
                 is_sorted: bool = False, trust_data: bool = False):
        assert col is not None
        col = col.long()
        if row is None:
            assert rowptr is not None
            counts = rowptr[1:] - rowptr[:-1]
            row = torch.repeat_interleave(torch.arange(counts.numel(), device=col.device), counts)
        row = row.long()
        M = sparse_sizes[0] if sparse_sizes is not None and sparse_sizes[0] is not None else (
            int(row.max()) + 1 if row.numel() else 0)
        N = sparse_sizes[1] if sparse_sizes is not None and sparse_sizes[1] is not None else (
            int(col.max()) + 1 if col.numel() else 0)
        self._sizes = (int(M), int(N))
        if not is_sorted and row.numel():
            perm = torch.argsort(row * max(N, 1) + col, stable=True)
            row, col = row[perm], col[perm]
            if value is not None:
                value = value[perm]
        self._row, self._col, self._value = row, col, value

    # -- the storage view PyG and the authors' code use (src.storage.row() etc.)
    @property
    def storage(self):
        return self

    def row(self) -> Tensor:
        return self._row

    def col(self) -> Tensor:
        return self._col

    def value(self) -> Optional[Tensor]:
        return self._value

    def rowcount(self) -> Tensor:
        return torch.bincount(self._row, minlength=self._sizes[0])

    def rowptr(self) -> Tensor:
        out = torch.zeros(self._sizes[0] + 1, dtype=torch.long, device=self._row.device)
        out[1:] = torch.cumsum(self.rowcount(), 0)
        return out

    def csr2csc(self) -> Tensor:
        return torch.argsort(self._col * max(self._sizes[0], 1) + self._row, stable=True)

    # -- tensor-level API
    def sizes(self):
        return list(self._sizes)

    def sparse_sizes(self):
        return self._sizes

    def sparse_size(self, dim: int) -> int:
        return self._sizes[dim]

    def size(self, dim: Optional[int] = None):
        return self._sizes if dim is None else self._sizes[dim]

    def dim(self) -> int:
        return 2

    def nnz(self) -> int:
        return self._row.numel()

    def numel(self) -> int:
        return self.nnz() if self._value is None else self._value.numel()

    def has_value(self) -> bool:
        return self._value is not None

    def device(self):
        return self._row.device

    def dtype(self):
        return self._value.dtype if self._value is not None else torch.float

    def is_cuda(self) -> bool:
        return False

    def coo(self):
        return self._row, self._col, self._value

    def csr(self):
        return self.rowptr(), self._col, self._value

    def _new(self, row, col, value, sizes=None, is_sorted=True):
        return SparseTensor(row=row, col=col, value=value,
                            sparse_sizes=sizes or self._sizes, is_sorted=is_sorted)

    def set_value(self, value: Optional[Tensor], layout: Optional[str] = None):
        return self._new(self._row, self._col, value)

    def fill_value(self, fill_value, dtype=None):
        value = torch.full((self.nnz(),), fill_value, dtype=dtype or torch.get_default_dtype(),
                           device=self._row.device)
        return self.set_value(value)

    def t(self):
        return self._new(self._col, self._row, self._value,
                         sizes=(self._sizes[1], self._sizes[0]), is_sorted=False)

    def to_dense(self, dtype=None):
        dtype = dtype or (self._value.dtype if self._value is not None else torch.get_default_dtype())
        mat = torch.zeros(self._sizes, dtype=dtype, device=self._row.device)
        if self._value is None:
            mat[self._row, self._col] = torch.ones(self.nnz(), dtype=dtype, device=self._row.device)
        else:
            mat[self._row, self._col] = self._value.to(dtype)
        return mat

    def to_symmetric(self, reduce: str = "sum"):
        assert reduce in ("sum", "add")
        N = max(self._sizes)
        row = torch.cat([self._row, self._col])
        col = torch.cat([self._col, self._row])
        key = row * N + col
        uniq, inverse = torch.unique(key, sorted=True, return_inverse=True)
        value = None
        if self._value is not None:
            value = torch.zeros(uniq.numel(), dtype=self._value.dtype, device=self._value.device)
            value.index_add_(0, inverse, torch.cat([self._value, self._value]))
        return SparseTensor(row=uniq // N, col=uniq % N, value=value, sparse_sizes=(N, N),
                            is_sorted=True)

    def to(self, *args, **kwargs):
        return self

    def cpu(self):
        return self

    def clone(self):
        return self._new(self._row.clone(), self._col.clone(),
                         None if self._value is None else self._value.clone())

    def __matmul__(self, other):
        return matmul(self, other)

    def __repr__(self):
        return f"SparseTensor(shim, sizes={self._sizes}, nnz={self.nnz()}, has_value={self.has_value()})"


SparseStorage = SparseTensor  # torch_geometric.typing imports the name


def remove_diag(src: SparseTensor, k: int = 0) -> SparseTensor:
    assert k == 0
    keep = src._row != src._col
    value = None if src._value is None else src._value[keep]
    return src._new(src._row[keep], src._col[keep], value)


def set_diag(src: SparseTensor, values: Optional[Tensor] = None, k: int = 0) -> SparseTensor:
    assert k == 0
    src = remove_diag(src)
    num_diag = min(src._sizes)
    diag = torch.arange(num_diag, device=src._row.device)
    row = torch.cat([src._row, diag])
    col = torch.cat([src._col, diag])
    value = None
    if src._value is not None:
        dvals = values if values is not None else torch.ones(num_diag, dtype=src._value.dtype)
        value = torch.cat([src._value, dvals.to(src._value.dtype)])
    return src._new(row, col, value, is_sorted=False)


def fill_diag(src: SparseTensor, fill_value, k: int = 0) -> SparseTensor:
    assert k == 0
    num_diag = min(src._sizes)
    if src._value is not None:
        return set_diag(src, src._value.new_full((num_diag,), fill_value), k)
    return set_diag(src, None, k)


def sum(src: SparseTensor, dim: Optional[int] = None):  # noqa: A001 (torch_sparse's name)
    if dim != 1:
        raise NotImplementedError("torch_sparse shim: only sum(dim=1)")
    if src._value is None:
        return src.rowcount().to(torch.get_default_dtype())
    out = torch.zeros(src._sizes[0], dtype=src._value.dtype, device=src._value.device)
    return out.index_add_(0, src._row, src._value)


def mul(src: SparseTensor, other: Tensor) -> SparseTensor:
    if not isinstance(other, Tensor):
        raise NotImplementedError("torch_sparse shim: mul by a dense tensor only")
    if other.size(0) == src.size(0) and other.size(1) == 1:  # row-wise
        factor = other.squeeze(1)[src._row]
    elif other.size(0) == 1 and other.size(1) == src.size(1):  # column-wise
        factor = other.squeeze(0)[src._col]
    else:
        raise ValueError(f"Size mismatch: got {tuple(other.size())} for {src.sizes()}")
    value = factor if src._value is None else factor.to(src._value.dtype).mul_(src._value)
    return src.set_value(value)


def matmul(src: SparseTensor, other, reduce: str = "sum"):
    if reduce not in ("sum", "add"):
        raise NotImplementedError("torch_sparse shim: matmul reduce='sum' only")
    if isinstance(other, Tensor):
        # differentiable w.r.t. ``other`` (as torch_sparse's spmm is)
        value = src._value
        gathered = other.index_select(0, src._col)
        if value is not None:
            gathered = gathered * value.view(-1, *([1] * (other.dim() - 1))).to(other.dtype)
        out = torch.zeros((src._sizes[0],) + tuple(other.shape[1:]), dtype=other.dtype,
                          device=other.device)
        return out.index_add(0, src._row, gathered)
    if isinstance(other, SparseTensor):
        a = torch.sparse_coo_tensor(torch.stack([src._row, src._col]),
                                    src._value if src._value is not None else torch.ones(src.nnz()),
                                    src._sizes).coalesce()
        b = torch.sparse_coo_tensor(torch.stack([other._row, other._col]),
                                    other._value if other._value is not None else torch.ones(other.nnz()),
                                    other._sizes).coalesce()
        c = torch.sparse.mm(a, b).coalesce()
        idx = c.indices()
        return SparseTensor(row=idx[0], col=idx[1], value=c.values(),
                            sparse_sizes=(src._sizes[0], other._sizes[1]), is_sorted=True)
    raise TypeError(type(other))
