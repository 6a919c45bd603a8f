"""Kernels equal dense integer / float references exactly."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from bench_suite.engine import kernels as K
from bench_suite.engine.intmodel import fq
from bench_suite.engine.kernels import aggregation as A
from bench_suite.engine.packing import pack, row_bytes, unpack


def random_adjacency(n: int = 260, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.random((n, n)) < 0.03
    a[3, :] = True            # hub: > 85 and > 17 neighbours, so SWAR lanes flush mid-row
    a[3, 200:] = False        # ... and a partial block after the flush
    a[7, :] = False           # isolated node, no self-loop: empty row
    a[:, 7] = False
    np.fill_diagonal(a[10:, 10:], True)  # self-loops on most nodes
    return a


def csr(a: np.ndarray):
    m = sp.csr_matrix(a)
    return m.indptr.astype(np.int64), m.indices.astype(np.int64)


@pytest.mark.parametrize("bits", [2, 4, 8])
# every dispatch path and vector tail: row bytes 8 (one word, the register kernels), 16 (INT8
# registers; INT2/INT4 one 16-byte block), 24 (16 + 8), 32, 40 (32 + 8), 48 (32 + 16), 56 (32 + 16 + 8)
@pytest.mark.parametrize("width", [1, 5, 8, 16, 17, 20, 32, 33, 40, 48, 56, 64, 65, 96, 112, 130, 224])
def test_aggregate_matches_dense_reference(bits: int, width: int) -> None:
    a = random_adjacency(seed=bits + width)
    assert a[3].sum() > 85 and a[7].sum() == 0
    rng = np.random.default_rng(width)
    q = rng.integers(0, 2 ** bits, (a.shape[0], width)).astype(np.uint8)
    q[5] = 2 ** bits - 1  # saturated codes stress the lane limit
    a[:, 5] = True
    indptr, indices = csr(a)
    S, lo, hi = K.aggregate(indptr, indices, pack(q, bits), bits, width)
    ref = a.astype(np.int64) @ q.astype(np.int64)
    np.testing.assert_array_equal(S, ref)
    np.testing.assert_array_equal(lo, ref.min(1))
    np.testing.assert_array_equal(hi, ref.max(1))


def test_aggregate_two_threads_same_result() -> None:
    a = random_adjacency(seed=9)
    q = np.random.default_rng(1).integers(0, 4, (a.shape[0], 40)).astype(np.uint8)
    indptr, indices = csr(a)
    K.set_threads(1)
    one = K.aggregate(indptr, indices, pack(q, 2), 2, 40)[0]
    K.set_threads(2)
    two = K.aggregate(indptr, indices, pack(q, 2), 2, 40)[0]
    np.testing.assert_array_equal(one, two)


def counts_csr(counts: np.ndarray):
    """CSR of a matrix of edge multiplicities: neighbour ``j`` listed ``counts[i, j]`` times in row ``i``."""
    indptr = np.concatenate([[0], np.cumsum(counts.sum(1))]).astype(np.int64)
    indices = np.concatenate([np.repeat(np.arange(counts.shape[1]), c) for c in counts]).astype(np.int64)
    return indptr, indices


def kernels_with_sentinel(indptr, indices, packed, bits, width, bounds):
    """Every aggregation kernel that takes rows of this shape, run over ``bounds`` into outputs
    pre-filled with −1, so that a row no chunk covers shows up (``np.empty`` could hold a stale
    correct result)."""
    n = len(indptr) - 1
    words = packed.view(np.uint64)
    runs = []

    def outs():
        return np.full((n, width), -1, np.int32), np.full(n, -1, np.int32), np.full(n, -1, np.int32)

    for pf in (False, True):
        runs.append((f"vec pf={pf}", A._aggregate_vec(indptr, indices, packed, bits, width, bounds, pf, *outs())))
    if bits == 8 and words.shape[1] <= 2:
        runs.append(("bytes_narrow", A._aggregate_bytes_narrow(indptr, indices, words, width, bounds, True, *outs())))
    if bits != 8 and words.shape[1] == 1:
        mask = A.MASK2 if bits == 2 else A.MASK4
        runs.append(("swar_narrow", A._aggregate_swar_narrow(indptr, indices, words, bits, width, mask, bounds, True,
                                                             *outs())))
    return runs


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("width", [7, 16, 40, 64, 130, 256])
def test_aggregate_flushes_at_every_lane_limit(bits: int, width: int) -> None:
    """Rows of saturated codes with as many neighbours as a lane holds, one more, twice as many and
    more: the 8-bit SWAR lanes (85, 17), INT8's 16-bit register lanes (257), the register byte lanes
    of INT2/INT4 rows of 16, 32 and 64 bytes (85, 17; widths 40, 64, 256) and the uint16 lanes
    (21845, 4369, 257) overflow by one neighbour if a flush comes late, and lose a neighbour if it
    comes early or is missed at the end of the row."""
    qm = 2 ** bits - 1
    limits = sorted({255 // qm, 257, 65535 // qm})
    degrees = [0, 1]
    for lim in limits:
        degrees += [lim - 1, lim, lim + 1, 2 * lim, 2 * lim + 3]
    m = 40  # neighbours: rows 0..m-1 of the code matrix
    rng = np.random.default_rng(bits * width)
    counts = np.zeros((len(degrees) + m, len(degrees) + m), np.int64)
    for r, d in enumerate(degrees):
        counts[r, :m] = np.bincount(rng.integers(0, m, d), minlength=m)
    counts[len(degrees):, :m] = rng.integers(0, 3, (m, m))
    q = rng.integers(0, qm + 1, (counts.shape[0], width)).astype(np.uint8)
    q[: m // 2] = qm  # half the neighbours saturated
    indptr, indices = counts_csr(counts)
    assert (np.diff(indptr)[: len(degrees)] == degrees).all()
    ref = counts @ q.astype(np.int64)
    packed = pack(q, bits)
    S, lo, hi = K.aggregate(indptr, indices, packed, bits, width)
    np.testing.assert_array_equal(S, ref)
    np.testing.assert_array_equal(lo, ref.min(1))
    np.testing.assert_array_equal(hi, ref.max(1))
    bounds = A.chunk_bounds(indptr, 5)
    for name, (S, lo, hi) in kernels_with_sentinel(indptr, indices, packed, bits, width, bounds):
        np.testing.assert_array_equal(S, ref, err_msg=name)
        np.testing.assert_array_equal(lo, ref.min(1), err_msg=name)


def power_law_csr(n: int = 400, seed: int = 0):
    """A CSR whose in-degrees grow towards the last rows (hubs at the end, empty rows scattered):
    equal-row chunks would give the last thread most of the edges."""
    rng = np.random.default_rng(seed)
    deg = (rng.pareto(1.2, n) * 3).astype(np.int64)
    deg = np.sort(deg)
    deg[rng.integers(0, n, 20)] = 0
    indptr = np.concatenate([[0], np.cumsum(deg)]).astype(np.int64)
    indices = rng.integers(0, n, indptr[-1]).astype(np.int64)
    return indptr, indices


@pytest.mark.parametrize("nchunks", [1, 2, 3, 7, 32, 399, 400, 1000])
def test_chunk_bounds_cover_every_row_once_with_equal_cost(nchunks: int) -> None:
    indptr, _ = power_law_csr()
    n = len(indptr) - 1
    b = A.chunk_bounds(indptr, nchunks)
    assert b.shape == (nchunks + 1,) and b[0] == 0 and b[-1] == n and (np.diff(b) >= 0).all()
    cost = indptr + A.ROW_COST * np.arange(n + 1)
    per_chunk = cost[b[1:]] - cost[b[:-1]]
    heaviest_row = (np.diff(indptr) + A.ROW_COST).max()
    assert per_chunk.max() <= cost[-1] / nchunks + heaviest_row
    if nchunks == 2:  # the two threads' shares: equal edges, not equal rows
        assert abs(per_chunk[0] - per_chunk[1]) <= heaviest_row
        assert b[1] > n // 2


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("width", [9, 64])
@pytest.mark.parametrize("nchunks", [1, 2, 3, 32, 1000])
def test_aggregate_chunks_partition_the_rows(bits: int, width: int, nchunks: int) -> None:
    """Any chunking (empty chunks, chunks of one row, more chunks than rows) writes every row once."""
    indptr, indices = power_law_csr(seed=bits)
    n = len(indptr) - 1
    q = np.random.default_rng(width).integers(0, 2 ** bits, (n, width)).astype(np.uint8)
    a = sp.csr_matrix((np.ones(indices.size, np.int64), indices, indptr), shape=(n, n))
    ref = np.asarray(a @ q.astype(np.int64))
    ref_lo = np.where(np.diff(indptr) > 0, ref.min(1), 0)
    packed = pack(q, bits)
    for name, (S, lo, hi) in kernels_with_sentinel(indptr, indices, packed, bits, width,
                                                   A.chunk_bounds(indptr, nchunks)):
        np.testing.assert_array_equal(S, ref, err_msg=name)
        np.testing.assert_array_equal(lo, ref_lo, err_msg=name)
        np.testing.assert_array_equal(hi, ref.max(1), err_msg=name)


def quant(x, p):
    s, z, qm = (np.float32(v) for v in p)
    return np.clip(np.rint(x / s) + z, 0, qm)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantize_pack_matches_reference(bits: int) -> None:
    rng = np.random.default_rng(bits)
    x = rng.standard_normal((50, 33)).astype(np.float32)
    norm = rng.random(50).astype(np.float32) + 0.1
    Q = 2 ** bits - 1
    feat, msg = (0.3, 3.0, float(Q)), (0.2, 1.0, float(Q))
    packed = K.quantize_pack(x, norm, msg, bits, row_bytes(33, bits), feat)
    want = quant(fq(x, feat) * norm[:, None], msg)
    np.testing.assert_array_equal(unpack(packed, bits, 33), want)
    np.testing.assert_array_equal(packed, pack(want.astype(np.uint8), bits))  # padding bytes are zero too
    plain = K.quantize_pack(x, norm, msg, bits, row_bytes(33, bits))
    np.testing.assert_array_equal(unpack(plain, bits, 33), quant(x * norm[:, None], msg))


def ordered_reference(a: np.ndarray, q: np.ndarray, sm: float, zm: float, norm: np.ndarray) -> np.ndarray:
    """The fake-quant model's normalised aggregation, dense and slow: ``fl(T)·d̃^{-1/2}`` with
    ``T = Σ_j (q_j − z)·s`` added one term at a time in float32, in CSR order."""
    m = (q.astype(np.float32) - np.float32(zm)) * np.float32(sm)
    out = np.zeros(q.shape, np.float32)
    for i in range(a.shape[0]):
        for j in np.flatnonzero(a[i]):
            out[i] += m[j]
    return out * norm[:, None]


def neighbour_sums(a: np.ndarray, q: np.ndarray, bits: int, sm: float, zm: float, deg, norm) -> tuple:
    indptr, indices = csr(a)
    packed = pack(q, bits)
    S, smin, smax = K.aggregate(indptr, indices, packed, bits, q.shape[1])
    ns = K.NeighbourSums(S, np.float32(sm), np.float32(zm), indptr, indices, packed, bits,
                         K.row_bounds(deg, norm, sm, zm, max(zm, 2 ** bits - 1 - zm)))
    return ns, smin, smax


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_epilogue_modes_match_the_float_order_reference(bits: int) -> None:
    """Every mode of the epilogue after an aggregation equals the dense reference computed in the
    fake-quant model's float32 order, although the exact sums put many elements on the other side
    of a tie (message scale 0.1, aggregate scale 0.2: ``s·(S − z·d̃)/0.2`` is a tie for every odd
    ``S − z·d̃``), and the range of the aggregate is the reference's."""
    a = random_adjacency(seed=bits)
    rng = np.random.default_rng(bits)
    n, f = a.shape[0], 12
    q = rng.integers(0, 2 ** bits, (n, f)).astype(np.uint8)
    deg = a.sum(1).astype(np.float32)  # row 7 has no neighbour: d̃ = 0, S = 0
    norm = np.ones(n, np.float32)  # unit norm keeps the ties; the kernel multiplies by it all the same
    bias = rng.standard_normal((1, f)).astype(np.float32)
    sm, zm = 0.1, float(2 ** bits // 2)
    ns, smin, smax = neighbour_sums(a, q, bits, sm, zm, deg, norm)
    ref_a = ordered_reference(a, q, sm, zm, norm)
    exact_a = np.float32(sm) * (ns.S.astype(np.float32) - np.float32(zm) * deg[:, None])
    Q = float(2 ** (bits + 4) - 1)
    agg, upd, nxt = (0.2, Q // 2, Q), (0.5, 3.0, 15.0), (0.1, 0.0, 3.0)
    assert (quant(exact_a, agg) != quant(ref_a, agg)).sum() > 3, "no element where the order decides the code"
    v = fq(ref_a, agg) + bias
    s_a = float(np.float32(agg[0]))
    ties = K.fix_ties(ns, norm, deg, s_a)
    whole = K.fix_ties(K.whole_rows(ns, norm, deg, 1e-12), norm, deg, s_a)  # every row of several terms
    assert 3 < ties.fix_idx.size < n * f // 2 and whole.fix_idx.size == 0 and (whole.whole_slot >= 0).sum() > n // 2
    for sums in (ties, whole):
        kw = dict(sums=sums, deg=deg, norm=norm)
        lo, hi = K.epilogue(ns.S, agg, bias, mode="range", **kw)
        np.testing.assert_array_equal(lo, v.min(1))
        np.testing.assert_array_equal(hi, v.max(1))
        out = K.epilogue(ns.S, agg, bias, update=upd, mode="float", **kw)
        np.testing.assert_array_equal(out, fq(v, upd))
        codes = K.epilogue(ns.S, agg, bias, update=upd, relu=True, mode="codes", following=nxt, **kw)
        np.testing.assert_array_equal(codes, quant(np.maximum(fq(v, upd), 0), nxt))
    assert K.sum_extremes(ns, smin, smax, deg, norm) == (ref_a.min(), ref_a.max())
    assert K.sum_extremes(whole, smin, smax, deg, norm) == (ref_a.min(), ref_a.max())
    dense = rng.standard_normal((n, f)).astype(np.float32)
    np.testing.assert_array_equal(K.epilogue(dense, agg, bias, mode="float"), fq(dense, agg) + bias)


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_epilogue_without_recomputed_sums_is_the_integer_formula(bits: int) -> None:
    """Neighbour sums that have not been through ``fix_ties`` (``sums="exact"``, which never recomputes
    one, not even the row bounds) give every mode of the epilogue the integer model's
    ``a = s_m·(S − z_m·d̃)·d̃^{-1/2}``, on the ties of the float-order test where the order decides codes."""
    a = random_adjacency(seed=bits)
    rng = np.random.default_rng(bits)
    n, f = a.shape[0], 12
    q = rng.integers(0, 2 ** bits, (n, f)).astype(np.uint8)
    deg = a.sum(1).astype(np.float32)
    norm = np.where(np.arange(n) % 2, np.maximum(deg, 1) ** -0.5, 1).astype(np.float32)  # half keep their ties
    bias = rng.standard_normal((1, f)).astype(np.float32)
    sm, zm = 0.1, float(2 ** bits // 2)
    indptr, indices = csr(a)
    packed = pack(q, bits)
    S = K.aggregate(indptr, indices, packed, bits, f)[0]
    ns = K.NeighbourSums(S, np.float32(sm), np.float32(zm), indptr, indices, packed, bits)
    assert not ns.recomputed
    exact_a = (np.float32(sm) * (S.astype(np.float32) - np.float32(zm) * deg[:, None])) * norm[:, None]
    Q = float(2 ** (bits + 4) - 1)
    agg, upd, nxt = (0.2, Q // 2, Q), (0.5, 3.0, 15.0), (0.1, 0.0, 3.0)
    ref_a = ordered_reference(a, q, sm, zm, norm)
    assert (quant(exact_a, agg) != quant(ref_a, agg)).sum() > 3, "no element where the order decides the code"
    v = fq(exact_a, agg) + bias
    kw = dict(sums=ns, deg=deg, norm=norm)
    lo, hi = K.epilogue(S, agg, bias, mode="range", **kw)
    np.testing.assert_array_equal(lo, v.min(1))
    np.testing.assert_array_equal(hi, v.max(1))
    np.testing.assert_array_equal(K.epilogue(S, agg, bias, update=upd, mode="float", **kw), fq(v, upd))
    codes = K.epilogue(S, agg, bias, update=upd, relu=True, mode="codes", following=nxt, **kw)
    np.testing.assert_array_equal(codes, quant(np.maximum(fq(v, upd), 0), nxt))
    np.testing.assert_array_equal(K.epilogue(S, agg, bias, mode="float", coef=0.9, **kw),
                                  np.float32(0.9) * fq(exact_a, agg) + bias)


def test_row_bounds_hold_on_adversarial_sums() -> None:
    """The bound on |float-order sum − exact sum| holds for a hub whose messages alternate between the
    extreme codes (the largest partial sums, the largest rounding errors)."""
    n, f, bits = 3000, 8, 8
    a = np.zeros((n, n), bool)
    a[0, :] = True
    a[np.arange(n), np.arange(n)] = True
    rng = np.random.default_rng(0)
    q = np.where(rng.random((n, f)) < 0.5, 255, 0).astype(np.uint8)
    q[: n // 2] = 255
    deg = a.sum(1).astype(np.float32)
    norm = (deg ** -0.5).astype(np.float32)
    sm, zm = 0.0123457, 3.0
    ns, _, _ = neighbour_sums(a, q, bits, sm, zm, deg, norm)
    exact = sm * (ns.S.astype(np.float64) - zm * deg[:, None]) * norm[:, None]
    err = np.abs(ordered_reference(a, q, sm, zm, norm) - exact)
    assert (err <= ns.bound[:, None]).all() and err[0].max() > 0


def test_retain_heap_stops_page_faults_on_reallocation() -> None:
    """After retain_heap, freeing and re-allocating a 64 MiB array touches no fresh pages
    (it did: a C-int truncation set glibc's trim threshold to 0).  Own process: the
    setting is process-wide."""
    import subprocess
    import sys

    code = (
        "import resource, numpy as np\n"
        "from bench_suite.engine.kernels import retain_heap\n"
        "assert retain_heap()\n"
        "def cycle():\n"
        "    a = np.ones(8 << 20); b = np.ones(8 << 20); del a, b\n"
        "cycle()\n"
        "f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(5): cycle()\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    faults = int(out.stdout.split()[-1])
    assert faults < 1000, f"{faults} page faults for 5 re-allocations of 2 x 64 MiB (16k pages each if trimmed)"


@pytest.mark.parametrize("w_zero", [128, 40, 230])
def test_int_linear_equals_integer_product_with_and_without_rank1_correction(w_zero: int) -> None:
    """uint8 x int8 via oneDNN: y = s_x·s_w·Σ_k (x − z_x)(q − z_w).  With z_w far from 128 the
    centred weight does not fit int8 and IntLinear adds the rank-1 correction to the integer sums
    (finish_product) before scaling once: the exact sum times float32(s_x)·float32(s_w), to the bit."""
    from bench_suite.engine.convert import RangeRule
    from bench_suite.engine.intmodel import IntLinear
    from bench_suite.engine.packing import PackedTensor

    rng = np.random.default_rng(w_zero)
    n, k, m = 300, 70, 24
    q = rng.integers(0, 256, (m, k)).astype(np.uint8)
    x = rng.integers(0, 256, (n, k)).astype(np.uint8)
    s_x, z_x, s_w = 0.02, 7, 0.01
    rule = RangeRule(kind="static", bits=8, scale=s_x, zero=z_x)
    lin = IntLinear(PackedTensor.from_codes(q, 8, s_w, w_zero), rule, rule)
    assert (lin.shift != 0) == (w_zero != 128)
    exact = (x.astype(np.int64) - z_x) @ (q.astype(np.int64) - w_zero).T
    y = lin(x, (s_x, z_x, 255.0))
    np.testing.assert_allclose(y, s_x * s_w * exact, rtol=1e-5, atol=1e-3)
    if w_zero != 128:
        assert np.abs(exact).max() < 2 ** 24 and lin.centre == 128
        want = exact.astype(np.float32) * (np.float32(s_x) * np.float32(s_w))
        np.testing.assert_array_equal(y.view(np.int32), want.view(np.int32))


# bit truncation (METHOD.md §6): 8-bit grid, shift κ, step 85, 2-bit codes
BT_CASES = [(0.0, 0.0), (37.0, 2.0), (128.0, -1.0)]


@pytest.mark.parametrize("z,kappa", BT_CASES)
def test_truncated_kernels_equal_the_fake_quant_kernel_bit_for_bit(z: float, kappa: float) -> None:
    """quantize, fq_rows, fq, quantize_pack and the epilogue under BT/BT* give the training kernel's
    (``fake_quant_fused`` with step 85) values and its 2-bit codes, to the bit."""
    import torch

    from bench_suite.quant.fused import fake_quant_fused

    rng = np.random.default_rng(int(z))
    x = (rng.standard_normal((60, 37)) * 2).astype(np.float32)
    s = np.float32(0.03)
    p = (float(s), z, 255.0, 85.0, kappa, 3.0)
    ref = fake_quant_fused(torch.from_numpy(x), torch.tensor(s), torch.tensor(np.float32(z)), 8, step=85,
                           kappa=kappa, code_bits=2).numpy()
    trunc, g = K.grid(p)
    assert trunc and K.effective(p) == (float(np.float32(s * np.float32(85))), float(np.float32(np.float32(z) / 85)))
    ss, zs = (np.float32(v) for v in K.effective(p))
    codes = K.quantize(x, p)
    assert codes.max() <= 3 and len(np.unique(codes)) > 1
    np.testing.assert_array_equal(((codes.astype(np.float32) - zs) * ss).view(np.int32), ref.view(np.int32))
    out, lo, hi = K.fq_rows(x, p)
    np.testing.assert_array_equal(out.view(np.int32), ref.view(np.int32))
    np.testing.assert_array_equal(lo, ref.min(1))
    np.testing.assert_array_equal(fq(x, p).view(np.int32), ref.view(np.int32))
    norm = (rng.random(60) + 0.2).astype(np.float32)
    packed = K.quantize_pack(x / norm[:, None], norm, (0.1, 1.0, 3.0), 2, row_bytes(37, 2), feature=p)
    np.testing.assert_array_equal(unpack(packed, 2, 37), quant(fq(x / norm[:, None], p) * norm[:, None],
                                                                (0.1, 1.0, 3.0)))
    msg = K.quantize_pack(x, np.ones(60, np.float32), p, 2, row_bytes(37, 2))
    np.testing.assert_array_equal(unpack(msg, 2, 37), codes)
    bias = rng.standard_normal((1, 37)).astype(np.float32)
    np.testing.assert_array_equal(K.epilogue(x, p, bias, mode="float"), ref + bias)
    nxt = K.epilogue(x, (0.05, 3.0, 15.0), bias, update=p, relu=True, mode="codes", following=p)
    np.testing.assert_array_equal(nxt, K.quantize(np.maximum(fq(fq(x, (0.05, 3.0, 15.0)) + bias, p), 0), p))


def test_int_linear_with_truncated_zero_points_equals_the_exact_product() -> None:
    """Bit-truncated input and weight codes (0..3) have zero points z/85 that oneDNN cannot take:
    IntLinear passes 0 and corrects by the column and row sums."""
    from bench_suite.engine.convert import RangeRule
    from bench_suite.engine.intmodel import IntLinear
    from bench_suite.engine.packing import PackedTensor

    rng = np.random.default_rng(5)
    n, k, m = 200, 45, 20
    q = rng.integers(0, 4, (m, k)).astype(np.uint8)
    x = rng.integers(0, 4, (n, k)).astype(np.uint8)
    zw = float(np.float32(np.float32(131.0) / 85))
    p = (0.004, 100.0, 255.0, 85.0, 1.0, 3.0)  # input: effective scale 0.34, zero 100/85
    s_x, z_x = K.effective(p)
    s_w = 0.02
    rule = RangeRule(kind="static", bits=2, scale=0.004, zero=100.0, grid_bits=8, step=85, kappa=1.0)
    lin = IntLinear(PackedTensor.from_codes(q, 2, s_w, zw), rule, rule)
    assert lin.shift != 0 and not float(z_x).is_integer()
    exact = (x.astype(np.float64) - z_x) @ (q.astype(np.float64) - zw).T
    np.testing.assert_allclose(lin(x, p), s_x * s_w * exact, rtol=1e-5, atol=1e-4)


def test_process_tuning_is_importable_without_numba_and_checks_c_ints() -> None:
    """bench_suite.engine.tuning can be shared by processes that never load the kernels (the runner's
    worker sets the same glibc thresholds), and refuses values a C int would truncate."""
    import subprocess
    import sys

    from bench_suite.engine.tuning import set_malloc_thresholds

    code = "import sys, bench_suite.engine.tuning\nassert 'numba' not in sys.modules and 'torch' not in sys.modules\n"
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(ValueError, match="C int"):
        set_malloc_thresholds(1 << 62, 0)
