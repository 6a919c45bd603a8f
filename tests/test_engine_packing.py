"""Packing of INT8/INT4/INT2 codes: exact round trips and the SWAR-friendly layout."""
from __future__ import annotations

import numpy as np
import pytest

from bench_suite.engine.packing import PackedTensor, codes_per_byte, pack, row_bytes, unpack


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("width", [1, 3, 5, 63, 64, 65, 130])
def test_round_trip(bits: int, width: int) -> None:
    rng = np.random.default_rng(bits * 1000 + width)
    codes = rng.integers(0, 2 ** bits, (9, width)).astype(np.uint8)
    packed = pack(codes, bits)
    assert packed.dtype == np.uint8 and packed.shape == (9, row_bytes(width, bits))
    assert packed.shape[1] % 8 == 0  # whole 64-bit words
    assert packed.shape[1] * codes_per_byte(bits) >= width
    assert packed.shape[1] * codes_per_byte(bits) < width + 8 * codes_per_byte(bits)
    np.testing.assert_array_equal(unpack(packed, bits, width), codes)


@pytest.mark.parametrize("bits", [2, 4])
def test_layout_feature_blocks(bits: int) -> None:
    # byte j, bit field k holds feature k * B + j
    width = 8 * 8 // bits * 2
    codes = np.arange(width, dtype=np.int64) % (2 ** bits)
    codes = codes[None, :].astype(np.uint8)
    packed = pack(codes, bits)
    nb = packed.shape[1]
    mask = (1 << bits) - 1
    for f in range(width):
        k, j = divmod(f, nb)
        assert (packed[0, j] >> (k * bits)) & mask == codes[0, f]


def test_bytes_per_value() -> None:
    codes = np.zeros((10, 256), np.uint8)
    assert pack(codes, 8).nbytes == 2560
    assert pack(codes, 4).nbytes == 1280
    assert pack(codes, 2).nbytes == 640


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="bits=3"):
        pack(np.zeros((2, 2), np.uint8), 3)
    with pytest.raises(ValueError, match="outside 0..3"):
        pack(np.full((2, 2), 4, np.uint8), 2)


def test_packed_tensor_state_and_dequantize() -> None:
    codes = np.array([[0, 1, 2, 3, 3]], np.uint8)
    t = PackedTensor.from_codes(codes, 2, 0.5, 1)
    back = PackedTensor.from_state(t.state())
    np.testing.assert_array_equal(back.codes(), codes)
    np.testing.assert_allclose(back.dequantize(), [[-0.5, 0, 0.5, 1, 1]])
    assert t.nbytes == 8 + 8


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_packed_codes_start_on_a_cache_line(bits: int) -> None:
    """Both producers of packed code matrices (``pack`` and the engine's ``quantize_pack``) start them
    on a 64-byte boundary, for small (heap) and large (mmap: 16 bytes past a page) allocations alike:
    unaligned rows straddle cache lines and made the aggregation 2-3x slower on a large graph."""
    from bench_suite.engine.kernels import quantize_pack

    rng = np.random.default_rng(bits)
    for n, width in ((3, 20), (17, 64), (1000, 256), (20000, 256)):
        codes = rng.integers(0, 2 ** bits, (n, width)).astype(np.uint8)
        p = pack(codes, bits)
        assert p.ctypes.data % 64 == 0, (n, width)
        assert p.flags.c_contiguous and np.array_equal(unpack(p, bits, width), codes)
        x = rng.standard_normal((n, width)).astype(np.float32)
        q = quantize_pack(x, np.ones(n, np.float32), (0.1, 2.0, float(2 ** bits - 1)), bits, row_bytes(width, bits))
        assert q.ctypes.data % 64 == 0 and q.shape == (n, row_bytes(width, bits)), (n, width)
