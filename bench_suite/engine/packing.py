"""Row-wise packing of INT8 / INT4 / INT2 codes (METHOD.md §9).

Layout (chosen for the SWAR aggregation kernel): a row of ``F`` codes of ``b`` bits
is padded to ``Fp`` codes, a multiple of ``8·c`` where ``c = 8 / b`` codes share one
byte, and stored in ``B = Fp / c`` bytes (a whole number of 64-bit words).  Byte
``j`` holds, in its bit field ``k`` (bits ``k·b … k·b+b−1``), the code of feature
``k·B + j``.  Masking a 64-bit word of the row with ``0x0303…03`` after a right
shift by ``k·b`` therefore yields eight consecutive features ``k·B + 8w … +7`` in
eight byte lanes, so lane sums flush into a contiguous block of accumulators.
INT8 is plain bytes (``c = 1``).

Packed matrices start on a cache line (:func:`aligned_empty`): rows of 64, 128 or 256 bytes then
never straddle two lines.  numpy's allocations are 16-byte aligned (large ones 16 bytes past a
page), and from an unaligned base every gathered row of the aggregation touches one line more than
it holds (its prefetch covers only the row's first lines): on the arxiv-sized graph, quiet machine,
one thread, CPU time, the matrix 16 or 48 bytes past a line took 1.39-1.48x (INT8), 2.10-2.46x (INT4)
and 1.31-1.56x (INT2) the aligned time at width 256, 1.04-1.68x at width 64; on the cache-resident
graphs (cora, amazon-computers, coauthor-physics) 1.0-1.45x (``benchmarks/aggregation.py --offsets
16 48``, results/cost/aggregation.jsonl, 2026-12-07).  With it the calibrated GCN-4 h256 pass on the
arxiv-sized graph went from 3.87x / 4.79x / 4.40x DGL FP32 at INT8 / INT4 / INT2 to 4.61x / 5.20x /
5.19x (reports/speed).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench_suite.bits import BITS, qmax


#: bytes of a cache line, the alignment of every packed code matrix
CACHE_LINE = 64


def aligned_empty(shape: tuple, dtype=np.uint8, align: int = CACHE_LINE) -> np.ndarray:
    """An uninitialised C-contiguous array whose first byte starts on an ``align``-byte boundary
    (a view into a slightly larger buffer, which it keeps alive)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = np.empty(nbytes + align, np.uint8)
    start = (-buf.ctypes.data) % align
    return buf[start:start + nbytes].view(dtype).reshape(shape)


def check_bits(bits: int, where: str = "") -> int:
    if bits not in BITS:
        loc = f" (from {where})" if where else ""
        raise ValueError(f"bits={bits!r}{loc} cannot be packed; valid: {', '.join(map(str, BITS))}")
    return int(bits)


def codes_per_byte(bits: int) -> int:
    return 8 // check_bits(bits)


def row_bytes(width: int, bits: int) -> int:
    """Bytes per packed row: ``ceil(width / (8c)) * 8`` (whole 64-bit words, at least one)."""
    c = codes_per_byte(bits)
    words = max(1, -(-int(width) // (8 * c)))
    return 8 * words


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack ``[N, F]`` codes in ``0 … 2^b−1`` into ``[N, row_bytes(F, bits)]`` uint8."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"pack expects a 2-D [N, F] array of codes, got shape {codes.shape}")
    c = codes_per_byte(bits)
    n, f = codes.shape
    if codes.size and (codes.min() < 0 or codes.max() > qmax(bits)):
        raise ValueError(f"codes outside 0..{qmax(bits)} cannot be packed at {bits} bits "
                         f"(got min {codes.min()}, max {codes.max()})")
    nb = row_bytes(f, bits)
    padded = np.zeros((n, nb * c), dtype=np.uint8)
    padded[:, :f] = codes
    blocks = padded.reshape(n, c, nb)
    out = aligned_empty((n, nb))
    out[...] = 0
    for k in range(c):
        out |= blocks[:, k, :] << np.uint8(k * bits)
    return out


def unpack(packed: np.ndarray, bits: int, width: int) -> np.ndarray:
    """Inverse of :func:`pack`: ``[N, B]`` uint8 → ``[N, width]`` uint8 codes."""
    c = codes_per_byte(bits)
    packed = np.asarray(packed, dtype=np.uint8)
    n, nb = packed.shape
    if nb != row_bytes(width, bits):
        raise ValueError(f"packed rows have {nb} bytes; width {width} at {bits} bits needs {row_bytes(width, bits)}")
    mask = np.uint8(qmax(bits))
    shifts = (np.arange(c, dtype=np.uint8) * bits)[None, :, None]
    return ((packed[:, None, :] >> shifts) & mask).reshape(n, c * nb)[:, :width]


def _zero(v) -> int | float:
    """A zero point: an int when integral, else the float (bit truncation's z/step)."""
    return int(v) if float(v).is_integer() else float(v)


@dataclass
class PackedTensor:
    """Codes of one ``[N, F]`` tensor with its per-tensor scale and zero point.

    The value represented is ``(q − zero) · scale`` (METHOD.md §1).  ``zero`` is an integer
    except for bit-truncated codes (METHOD.md §6), whose zero point is ``z/step``.
    """

    data: np.ndarray  # [N, row_bytes] uint8
    bits: int
    width: int
    scale: float
    zero: int | float

    @classmethod
    def from_codes(cls, codes: np.ndarray, bits: int, scale: float, zero: int | float) -> "PackedTensor":
        codes = np.asarray(codes)
        return cls(pack(codes, bits), int(bits), int(codes.shape[1]), float(scale), _zero(zero))

    def codes(self) -> np.ndarray:
        return unpack(self.data, self.bits, self.width)

    def dequantize(self) -> np.ndarray:
        return (self.codes().astype(np.float32) - np.float32(self.zero)) * np.float32(self.scale)

    @property
    def nbytes(self) -> int:
        """Bytes stored: the packed codes plus a float32 scale and an int32 (or float32) zero point."""
        return int(self.data.nbytes) + 8

    def state(self) -> dict:
        return {"data": self.data, "bits": self.bits, "width": self.width, "scale": self.scale, "zero": self.zero}

    @classmethod
    def from_state(cls, d: dict) -> "PackedTensor":
        return cls(np.asarray(d["data"], dtype=np.uint8), int(d["bits"]), int(d["width"]),
                   float(d["scale"]), _zero(d["zero"]))
