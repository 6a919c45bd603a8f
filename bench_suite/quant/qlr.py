"""QLR, quantization with learnable ranges, and BT/BT* bit truncation for INT2.

Proposed in "Low-bit Quantization for Deep Graph Neural Networks with
Smoothness-aware Message Propagation" (CIKM 2023, arXiv 2308.14949); see
METHOD.md §5–§6.

* ``qlr``: one learnable scalar α per quantizer scales the observed range of the
  current tensor, ``[min(0, α·min x), max(0, α·max x)]``.  α is initialised on the
  first forward by a grid search minimising mean |x̂ − x| and then trained with the
  true STE/LSQ gradient of :func:`bench_suite.quant.base.fake_quant` (optionally
  scaled by 1/√(numel·Q) as in LSQ, Esser et al., ICLR 2020).
* ``qlr-frozen``: the released code's behaviour (its α gradient is ≈ 0): α stays
  at its grid-search value.  An ablation.
* ``truncation="bt"`` / ``"bt*"`` (INT2 only): quantize at 8 bits with the QLR
  range, keep ``c = round(q8/85)`` (BT) or ``clamp(round((q8 + κ)/85), 0, 3)`` with
  κ the rounded Fisher–Pearson skewness of the tensor (BT*), and dequantize with the
  8-bit parameters.

Every quantizer here offers ``codes(x) -> (codes, scale, zero)`` with
``(codes − zero)·scale == forward(x)`` bit for bit in eval mode.  For BT/BT* the
stored codes are ``c ∈ {0..3}``, ``scale = 85·s8`` and ``zero = z8/85`` is a float
(in general not an integer); ``85·zero`` is the integer 8-bit zero point ``z8``, so an
integer engine can stay exact by computing ``s8·(85·Σc − z8·d)``.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from bench_suite.bits import BITS
from bench_suite.quant.base import EPS, Quantizer, qmax, quantize_codes, scale_zero
from bench_suite.quant import fused
from bench_suite.quant.fused import fake_quant_fused
from bench_suite.registry import QUANTIZERS
from bench_suite.sparse import aminmax, implicit_zeros, is_sparse, moments_skewness, quantized_product

TRUNCATIONS: Tuple[str, ...] = ("none", "bt", "bt*")
#: ``grad_mask`` values: "input" = the suite's STE/LSQ backward; "output" = the authors' backward
#: (:class:`_OutputMaskFakeQuant`)
GRAD_MASKS: Tuple[str, ...] = ("input", "output")
#: 8-bit codes kept by bit truncation: 0, 85, 170, 255 (= 255/3 apart).
BT_STEP = 85
TRUNCATION_BITS = 8
TRUNCATION_BITS_QMAX = qmax(TRUNCATION_BITS)
_ZERO32 = np.float32(0.0)


def alpha_grid(bits: int) -> Tensor:
    """Grid-search candidates for α: INT2 0.1..1.0 step 0.1; INT4/INT8 0.02..1.0 step 0.02."""
    if bits == 2:
        return torch.arange(1, 11, dtype=torch.float64) / 10
    return torch.arange(1, 51, dtype=torch.float64) / 50


def skewness(x: Tensor) -> float:
    """Fisher–Pearson sample skewness g1 = m3 / m2^{3/2} (0 for a constant tensor); of the whole
    tensor for a sparse one, its implicit zeros included."""
    if is_sparse(x):
        return moments_skewness(x)
    v = x.detach().reshape(-1).double()
    d = v - v.mean()
    m2 = d.square().mean()
    if float(m2) <= 0.0:
        return 0.0
    return float(d.pow(3).mean() / m2.pow(1.5))


def grad_scale(x: Tensor, g: float) -> Tensor:
    """Value ``x``, gradient multiplied by ``g`` (LSQ's gradient-scale trick)."""
    return (x - x * g).detach() + x * g


def _clamp_max(a: np.float32, m: np.float32) -> np.float32:
    """``torch.clamp(a, max=m)`` on one float32 value: NaN kept, else ``std::min(a, m)`` (``a`` on ties, so -0.0 stays)."""
    return a if (a != a or not m < a) else m


def _clamp_min(a: np.float32, m: np.float32) -> np.float32:
    """``torch.clamp(a, min=m)`` on one float32 value: NaN kept, else ``std::max(a, m)`` (``a`` on ties)."""
    return a if (a != a or not a < m) else m


def scale_chain(alpha: float, mn: float, mx: float, Q: int) -> Tuple[np.float32, ...]:
    """``(s, z, pre, α·mn, α·mx)`` of :func:`scale_zero` on QLR's range ``[clamp(α·mn, max=0),
    clamp(α·mx, min=0)]`` with ``pre = (hi − lo)/Q``: the same float32 operations in the same
    order on numpy scalars (a few hundred ns) instead of a dozen 0-dim torch ops (~30 µs, a deep
    GNN has six quantizers a layer); ``tests/test_qlr.py`` checks every bit, signed zeros included."""
    f32 = np.float32
    a, m0, m1, q = f32(alpha), f32(mn), f32(mx), f32(Q)
    amn, amx = a * m0, a * m1
    lo, hi = _clamp_max(amn, f32(0.0)), _clamp_min(amx, f32(0.0))
    pre = (hi - lo) / q
    s = _clamp_min(pre, f32(EPS))
    v = -lo / s
    r = v + (f32(np.rint(v)) - v)  # round_ste's value
    z = _clamp_max(_clamp_min(r, f32(0.0)), q)
    return s, z, pre, amn, amx


class _AlphaScale(torch.autograd.Function):
    """The scale ``s(α) = clamp((clamp(α·mx, min=0) − clamp(α·mn, max=0)) / Q, min=EPS)`` as one
    autograd node (speed: a deep GNN has six quantizers a layer, and the ten scalar nodes autograd
    records for this chain cost more than the fake quantization of a 2708x64 tensor).

    ``forward`` returns the scale ``s`` (float32 from :func:`scale_chain`) as a tensor shaped like α;
    ``backward`` applies the chain rule autograd applies to that chain (clamp, div, sub, clamp, mul,
    and the sum of α's two uses), each step in float32 as torch computes it, so α's gradient is
    bit-identical to the unfused path's (``tests/test_qlr.py``).  ``vals`` = (pre, α·mn, α·mx, mn, mx, Q)
    as float32 scalars.
    """

    @staticmethod
    def forward(ctx, alpha: Tensor, s: np.float32, vals: Tuple[np.float32, ...]) -> Tensor:
        ctx.vals = vals
        ctx.shape = alpha.shape
        return torch.full(alpha.shape, s, dtype=torch.float32)

    @staticmethod
    def backward(ctx, gs: Tensor):
        return torch.full(ctx.shape, _alpha_grad(np.float32(float(gs)), ctx.vals), dtype=torch.float32), None, None


def _alpha_grad(gs: np.float32, vals: Tuple[np.float32, ...]) -> np.float32:
    """∂ℒ/∂α from ∂ℒ/∂s through the chain of :func:`scale_chain` (:class:`_AlphaScale`'s backward)."""
    pre, amn, amx, mn, mx, Q = vals
    zero = np.float32(0.0)
    g = gs if pre >= np.float32(EPS) else zero  # clamp(min=EPS)
    g_hi = g / Q  # (hi − lo) / Q
    g_lo = -g_hi
    ga_hi = (g_hi if amx >= zero else zero) * mx  # clamp(α·mx, min=0), then α·mx
    ga_lo = (g_lo if amn <= zero else zero) * mn  # clamp(α·mn, max=0), then α·mn
    return ga_hi + ga_lo


class _QLRFakeQuant(torch.autograd.Function):
    """A QLR quantizer's training forward as one autograd node: the range ``α·[min x, max x]``, the
    scale chain of :func:`scale_chain` on float32 scalars, and one kernel pass that writes x̂
    (:func:`bench_suite.quant.fused.fake_quant_forward`); the backward pass is one kernel pass too
    over the saved x and the gradient (:func:`bench_suite.quant.fused.fake_quant_grad`: ∂ℒ/∂x and
    Σ g·∂x̂/∂s in float64, the factors recomputed), then α's gradient through the scale chain
    (:func:`_alpha_grad`).

    The same float32 operations in the same order as the composed path (:meth:`QLRQuantizer._quantize`
    on :meth:`QLRQuantizer.range_for`): the value and both gradients are equal bit for bit
    (``tests/test_quant_lean.py``).  ``consts`` = (α as a float, Q, step, κ, Qc).
    """

    @staticmethod
    def forward(ctx, x: Tensor, alpha: Tensor, consts: tuple) -> Tensor:
        a, Q, step, kappa, Qc = consts
        xc = x.detach().contiguous()
        mn, mx = (float(v) for v in torch.aminmax(xc))
        s, z, pre, amn, amx = scale_chain(a, mn, mx, Q)
        ctx.save_for_backward(xc)  # x itself if contiguous: its version counter guards against in-place changes
        ctx.grid = (s, z, Q, step, kappa, Qc)
        ctx.vals = (pre, amn, amx, np.float32(mn), np.float32(mx), np.float32(Q))
        return fused.fake_quant_forward(xc, s, z, Q, step, kappa, Qc)

    @staticmethod
    def backward(ctx, g: Tensor):
        gx, acc = fused.fake_quant_grad(ctx.saved_tensors[0], g, *ctx.grid, ctx.needs_input_grad[1],
                                        ctx.needs_input_grad[0])
        ga = None
        if acc is not None:
            ga = torch.full((), _alpha_grad(np.float32(acc), ctx.vals), dtype=torch.float32)
        return gx, ga, None


class _OutputMaskFakeQuant(torch.autograd.Function):
    """QLR's fake quantization with the backward of the authors' code (``grad_mask="output"``, an
    ablation): SamirMoustafa/SMP_GNN_Quant@00dd14c, ``QLR_quantizer_fun.py``,
    ``LearnsQuantize.backward`` (lines 98-132).  A plain torch path (correctness over speed).

    The forward value is the suite's (:func:`bench_suite.quant.fused.fake_quant_forward` on the range of
    :func:`scale_chain`, the same bits as the default path).  The backward, as their code computes it:

    * the mask tests the saved *quantized output* x̂ (their ``ctx.save_for_backward(output)``, inf set
      to 0) against the α-scaled, unclamped range ends α·min x, α·max x (their ``min_val``/``max_val``
      after ``* s_alpha``): ``middle = not (x̂ < α·min x) and not (x̂ > α·max x)``; ∂ℒ/∂x = g·middle.
      An element of an end code (clipped or not) dequantizes to ``hi + (v − z)·s`` (top) or
      ``lo + (v − z)·s`` (bottom), v = −lo/s the unrounded zero point: when z rounds down the top code
      lies above α·max x and all its elements are masked while the bottom code (clipped elements
      included) passes; when z rounds up the reverse.  So clipped inputs keep their gradient at one
      end only; with min x > 0 the code-0 value 0 < α·min x is masked.
    * ∂ℒ/∂α = Σ (small·α·min x + big·α·max x + middle·(round(q) − r))·(g·middle), with q the integer
      8-bit (BT/BT*: ``85·c``) or b-bit code and r = x̂·(1/s) + z recomputed from the output (BT/BT*:
      ``round((r + κ)/85)·85``).  Since g is masked first the small/big terms vanish, and
      round(q) − r is float rounding noise (exactly 0 under BT/BT*): α gets ~zero gradient.
    """

    @staticmethod
    def forward(ctx, x: Tensor, alpha: Tensor, consts: tuple) -> Tensor:
        a, Q, step, kappa, Qc = consts
        xc = x.detach().contiguous()
        mn, mx = (float(v) for v in torch.aminmax(xc))
        s, z, _, amn, amx = scale_chain(a, mn, mx, Q)
        out = fused.fake_quant_forward(xc, s, z, Q, step, kappa, Qc)
        ctx.consts = (s, z, amn, amx, step, float(kappa))
        ctx.alpha_shape = alpha.shape
        if ctx.needs_input_grad[1]:
            code = fused._codes(xc, torch.tensor(s), torch.tensor(z), Q, step, float(kappa), Qc)[1]
            ctx.save_for_backward(out.clone(), code * step if step != 1 else code)
        else:
            ctx.save_for_backward(out.clone())
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        s, z, amn, amx, step, kappa = ctx.consts
        saved = ctx.saved_tensors
        o = saved[0].clone()
        o[torch.isinf(o)] = 0
        f = torch.float32
        small = o < torch.tensor(amn, dtype=f)
        big = o > torch.tensor(amx, dtype=f)
        middle = (~(small | big)).to(g.dtype)
        gx = middle * g
        ga = None
        if ctx.needs_input_grad[1]:
            r = o * (1.0 / torch.tensor(s, dtype=f)) + torch.tensor(z, dtype=f)
            if step != 1:
                r = torch.round((r + kappa) / step) * step
            ga = (middle * (saved[1].round() - r) * gx).sum().reshape(ctx.alpha_shape)
        return (gx if ctx.needs_input_grad[0] else None), ga, None


#: A constant input denser than this keeps the dense α-gradient (the sampled product would not pay).
SPARSE_INPUT_MAX_DENSITY = 0.25
#: Widest product (columns of Ŵ) tried sparsely: MKL's sgemm here computes an element as one FMA
#: chain over k up to k = 192 and blocks k beyond (measured on AMD EPYC, 1 and 2 threads), where the
#: first-call check would fail; wider layers keep the dense product without trying.
SPARSE_INPUT_MAX_K = 192


class _SparseInputAlphaGrad(torch.autograd.Function):
    """Identity on ``h = x̂·Ŵ`` for a constant (no-gradient) input ``x``; its backward gives the
    scale ``s`` the gradient Σ (G·Ŵᵀ)∘t over the non-zero ∂x̂/∂s factors t only.

    Autograd would form the dense ∂ℒ/∂x̂ = G·Ŵᵀ (Cora: 2708x1433, a product FP32 training
    never computes) just for this sum, whose terms vanish wherever t = 0 (x = 0: x̂ = 0 is on
    the grid).  The sampled product is the same number bit for bit (see
    :func:`bench_suite.quant.fused.sampled_scale_grad`); on a quantizer's first such call the
    backward computes both and compares every term (``owner._sparse_checked``), and a mismatch
    (another BLAS, another CPU) switches that quantizer back to the dense product for good.
    """

    @staticmethod
    def forward(ctx, h: Tensor, s: Tensor, w: Tensor, idx: np.ndarray, tv: np.ndarray,
                t_full: Optional[Tensor], owner: "QLRQuantizer") -> Tensor:
        ctx.w, ctx.idx, ctx.tv, ctx.t_full, ctx.owner, ctx.shape = w, idx, tv, t_full, owner, s.shape
        return h.view_as(h)

    @staticmethod
    def backward(ctx, G: Tensor):
        if not ctx.needs_input_grad[1]:
            return G, None, None, None, None, None, None
        Gc = G.contiguous()
        if not bool(torch.isfinite(Gc).all()):  # the dense sum would be NaN (a non-finite g times t = 0)
            acc = float("nan")
        elif ctx.t_full is not None:  # first call: the dense reference, compared term by term
            dense = G.mm(ctx.w.t()).contiguous()
            acc = fused.scale_grad(dense, ctx.t_full)
            if ctx.idx is None:  # too dense to be worth it: nothing to check
                return G, torch.full(ctx.shape, acc, dtype=torch.float32), None, None, None, None, None
            sparse, g = fused.sampled_scale_grad(Gc, ctx.w, ctx.idx, ctx.tv, terms=True)
            same = sparse == acc and np.array_equal(g, dense.view(-1).numpy()[ctx.idx])
            ctx.owner._sparse_checked = bool(same)
            if not same:
                warnings.warn(f"QLR {ctx.owner.role}: the sampled α-gradient differs from the dense product on this "
                              "machine; using the dense product", RuntimeWarning, stacklevel=2)
        else:
            acc = fused.sampled_scale_grad(Gc, ctx.w, ctx.idx, ctx.tv)[0]
        return G, torch.full(ctx.shape, acc, dtype=torch.float32), None, None, None, None, None


@QUANTIZERS.register("qlr")
class QLRQuantizer(Quantizer):
    """Quantization with a learnable range scale α (QLR, arXiv 2308.14949, §5–§6 of METHOD.md).

    ``truncation``: ``"none"``, or ``"bt"`` / ``"bt*"`` (bit truncation, INT2 only).
    ``lsq_scale``: scale α's gradient by 1/√(numel·Q).  ``skew_refresh``: for BT*,
    re-measure the skewness κ every that many training steps (0 = only at init).
    ``grad_mask`` (ablation, default ``"input"`` = the suite's STE: no gradient to x where a clamp
    is active, LSQ gradient to α): ``"output"`` trains with the backward of the authors' code
    (:class:`_OutputMaskFakeQuant`: the mask tests the quantized output, α's gradient ~0), on a torch
    path; evaluation (no gradient) is unchanged.  Not combinable with ``lsq_scale``.
    """

    #: ``qlr-frozen`` sets this to False: α becomes a buffer fixed at its grid-search value.
    learn_alpha = True

    def __init__(self, bits: int, role: str, truncation: str = "none", lsq_scale: bool = False,
                 skew_refresh: int = 0, grad_mask: str = "input") -> None:
        self.validate_params(bits=bits, truncation=truncation, lsq_scale=lsq_scale, skew_refresh=skew_refresh,
                             grad_mask=grad_mask)
        super().__init__(bits, role)
        self.truncation = truncation
        self.lsq_scale = bool(lsq_scale)
        self.skew_refresh = int(skew_refresh)
        self.grad_mask = grad_mask
        alpha = torch.ones(())
        if self.learn_alpha:
            self.alpha = nn.Parameter(alpha)
        else:
            self.register_buffer("alpha", alpha)
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.register_buffer("kappa", torch.zeros(()))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self._sparse_checked: Optional[bool] = None  # see matmul(): None until its first backward

    @staticmethod
    def validate_params(bits: int = 8, truncation: str = "none", lsq_scale: bool = False,
                        skew_refresh: int = 0, grad_mask: str = "input") -> None:
        if grad_mask not in GRAD_MASKS:
            raise ValueError(f"grad_mask={grad_mask!r} is not valid; valid: {', '.join(map(repr, GRAD_MASKS))} "
                             "(input: the suite's STE on the input; output: the authors' backward, masked by "
                             "the quantized output)")
        if grad_mask != "input" and lsq_scale:
            raise ValueError("grad_mask='output' (the authors' backward) does not combine with lsq_scale=true")
        if truncation not in TRUNCATIONS:
            raise ValueError(f"truncation={truncation!r} is not valid; valid: {', '.join(map(repr, TRUNCATIONS))}")
        if truncation != "none" and bits != 2:
            raise ValueError(f"truncation={truncation!r} is INT2-only (bits=2); got bits={bits}")
        if bits not in BITS:
            raise ValueError(f"bits={bits!r} is not valid for qlr; valid: {', '.join(map(str, BITS))}")
        if not isinstance(skew_refresh, int) or isinstance(skew_refresh, bool) or skew_refresh < 0:
            raise ValueError(f"skew_refresh={skew_refresh!r} is not valid; use an integer >= 0 (0 = never)")

    # -- range ---------------------------------------------------------------
    @property
    def range_bits(self) -> int:
        """Bit width of the uniform grid: 8 under bit truncation, else ``bits``."""
        return TRUNCATION_BITS if self.truncation != "none" else self.bits

    def _alpha(self, x: Tensor) -> Tensor:
        if self.lsq_scale and self.learn_alpha:
            return grad_scale(self.alpha, 1.0 / math.sqrt(x.numel() * qmax(self.range_bits)))
        return self.alpha

    def range_for(self, x: Tensor, alpha: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """``[min(0, α·min x), max(0, α·max x)]``; differentiable in α, not in x."""
        mn, mx = aminmax(x)
        a = self._alpha(x) if alpha is None else alpha
        return torch.clamp(a * mn, max=0.0), torch.clamp(a * mx, min=0.0)

    def qparams(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """(scale, zero) such that ``x̂ = (codes − zero)·scale`` (see :meth:`codes`)."""
        _, s, z = self.codes(x)
        return s, z

    # -- quantization --------------------------------------------------------
    def _quantize(self, x: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
        """Fake-quantized ``x`` for the range ``[lo, hi]`` (STE; LSQ gradient to lo/hi)."""
        return self._quantize_sz(x, *scale_zero(lo, hi, self.range_bits))

    def _learned_scale(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """(scale as one :class:`_AlphaScale` node carrying α's gradient, the same scale without it, zero)
        for the range :meth:`range_for` gives ``x``."""
        Q = qmax(self.range_bits)
        mn, mx = (float(v) for v in aminmax(x))
        s, z, pre, amn, amx = scale_chain(float(self.alpha), mn, mx, Q)
        s_t = _AlphaScale.apply(self.alpha, s, (pre, amn, amx, np.float32(mn), np.float32(mx), np.float32(Q)))
        return s_t, s_t.detach(), torch.full(self.alpha.shape, z, dtype=torch.float32)

    def _quantize_learned(self, x: Tensor) -> Tensor:
        """:meth:`_quantize` on :meth:`range_for` with α's gradient through one :class:`_AlphaScale` node."""
        s, _, z = self._learned_scale(x)
        return self._quantize_sz(x, s, z)

    def _quantize_sz(self, x: Tensor, s: Tensor, z: Tensor) -> Tensor:
        if self.truncation == "none":
            return fake_quant_fused(x, s, z, self.bits)
        return fake_quant_fused(x, s, z, TRUNCATION_BITS, step=BT_STEP, kappa=float(self.kappa), code_bits=self.bits)

    def codes(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Integer codes in ``0..2^bits−1`` with (scale, zero): ``(codes − zero)·scale`` is the eval output."""
        with torch.no_grad():
            self._ensure_initialized(x)
            lo, hi = self.range_for(x)
            s, z = scale_zero(lo, hi, self.range_bits)
            q = quantize_codes(x, s, z, self.range_bits)
            if self.truncation == "none":
                return q.to(torch.int32), s, z
            c = torch.clamp(torch.round((q + float(self.kappa)) / BT_STEP), 0, qmax(self.bits))
            return c.to(torch.int32), s * BT_STEP, z / BT_STEP

    def range_rule(self) -> dict:
        """The integer engine's rule for this quantizer (:class:`bench_suite.engine.convert.RangeRule`):
        ``[min(0, α·min x), max(0, α·max x)]`` of the current tensor, on the 8-bit grid with its
        shift and step under bit truncation."""
        rule = {"kind": "scaled_minmax", "alpha": float(self.alpha)}
        if self.truncation != "none":
            rule.update(grid_bits=TRUNCATION_BITS, step=BT_STEP, kappa=float(self.kappa))
        return rule

    def dequant(self, codes: Tensor, scale: Tensor, zero: Tensor) -> Tensor:
        """``(codes − zero)·scale`` computed exactly as the forward pass does."""
        return (codes.to(scale.dtype) - zero) * scale

    # -- initialisation ------------------------------------------------------
    def _ensure_initialized(self, x: Tensor) -> None:
        if bool(self.initialized):
            return
        with torch.no_grad():
            if self.truncation == "bt*":
                self.kappa.fill_(self._shift(x))
            self.alpha.data.fill_(self.grid_search(x))
            self.initialized.fill_(True)

    def _shift(self, x: Tensor) -> int:
        """BT*'s shift κ = round(skewness(x)); a tensor with inf/NaN values (a diverged model) has no
        skewness, and the error says which quantizer met it instead of ``round``'s bare message."""
        g1 = skewness(x)
        if not math.isfinite(g1):
            raise FloatingPointError(f"BT*: the skewness of the {self.role!r} quantizer's input is {g1} (the "
                                     "tensor holds inf or NaN values: the model diverged before this quantizer)")
        return round(g1)

    def grid_search(self, x: Tensor) -> float:
        """The α of :func:`alpha_grid` minimising mean |x̂ − x| for this quantizer on ``x``."""
        x = x.detach()
        best, best_err = 1.0, math.inf
        with torch.no_grad():
            for a in alpha_grid(self.bits).tolist():
                at = torch.tensor(a, dtype=x.dtype)
                err = self._mean_abs_error(x, *self.range_for(x, at))
                if err < best_err:
                    best, best_err = a, err
        return best

    def _mean_abs_error(self, x: Tensor, lo: Tensor, hi: Tensor) -> float:
        """mean |x̂ − x| over the whole tensor; for a sparse one, the stored values plus the implicit
        zeros' |x̂(0)| (0 when 0 is on the grid), summed in float64."""
        if not is_sparse(x):
            return float((self._quantize(x, lo, hi) - x).abs().mean())
        v = x.values()
        total = (self._quantize(v, lo, hi) - v).abs().double().sum()
        zero_err = float(self._quantize(torch.zeros(1, dtype=v.dtype), lo, hi).abs())
        return float(total + implicit_zeros(x) * zero_err) / x.numel()

    def _track(self, x: Tensor) -> None:
        """Per-call bookkeeping of a forward pass: lazy initialisation, BT* skewness refresh, step count."""
        self._ensure_initialized(x)
        if self.training:
            if self.truncation == "bt*" and self.skew_refresh and int(self.steps) % self.skew_refresh == 0 \
                    and int(self.steps) > 0:
                self.kappa.fill_(self._shift(x))
            self.steps.add_(1)

    def forward(self, x: Tensor, graph: Any = None) -> Tensor:
        self._track(x)
        if self.grad_mask == "output" and torch.is_grad_enabled() and (x.requires_grad or self.alpha.requires_grad):
            return _OutputMaskFakeQuant.apply(x, self.alpha, self._lean_consts())
        if (not self.lsq_scale and x.dtype == torch.float32 and self.alpha.dtype == torch.float32
                and x.device.type == "cpu" and x.layout == torch.strided):
            return self._quantize_lean(x)
        if (self.learn_alpha and not self.lsq_scale and torch.is_grad_enabled() and self.alpha.requires_grad
                and x.dtype == torch.float32):
            return self._quantize_learned(x)
        return self._quantize(x, *self.range_for(x))

    def _quantize_lean(self, x: Tensor) -> Tensor:
        """:meth:`_quantize` on :meth:`range_for` for a dense float32 CPU ``x`` (α float32, unscaled), computed
        on float32 scalars and one kernel pass: one :class:`_QLRFakeQuant` node when a gradient is
        needed, no autograd at all otherwise (evaluation)."""
        consts = self._lean_consts()
        Q = consts[1]
        if torch.is_grad_enabled() and (x.requires_grad or self.alpha.requires_grad):
            return _QLRFakeQuant.apply(x, self.alpha, consts)
        xc = x.detach().contiguous()
        mn, mx = (float(v) for v in torch.aminmax(xc))
        s, z = scale_chain(consts[0], mn, mx, Q)[:2]
        return fused.fake_quant_forward(xc, s, z, Q, consts[2], consts[3], consts[4])

    def _lean_consts(self) -> tuple:
        """(α as a float, Q, step, κ, Qc) of the fused kernel for this quantizer."""
        trunc = self.truncation != "none"
        Q = TRUNCATION_BITS_QMAX if trunc else qmax(self.bits)
        return (float(self.alpha), Q, BT_STEP if trunc else 1, np.float32(float(self.kappa)) if trunc else _ZERO32,
                qmax(self.bits))

    def matmul(self, x: Tensor, weight: Callable[[], Tensor]) -> Tensor:
        """``self(x) @ weight()`` (in that order).  For a constant sparse input (a first layer's
        bag-of-words features: Cora's are 98.7% zeros) with a learned α, α's gradient comes from
        :class:`_SparseInputAlphaGrad` instead of the dense ∂ℒ/∂x̂: the same values, without a
        product FP32 training never computes (16-layer GCN on Cora: ~28 of QLR's ~73 ms over FP32).

        A CSR ``x`` (sparse features) is quantized on its stored values with the range of the whole
        tensor (:func:`bench_suite.sparse.quantized_product`); α's gradient comes through them.

        With ``grad_mask="output"`` in training: ``self(x) @ weight()`` on a dense ``x``."""
        if self.grad_mask == "output" and torch.is_grad_enabled():
            return self(x.to_dense() if is_sparse(x) else x) @ weight()
        if is_sparse(x):
            self._track(x)
            if (self.learn_alpha and not self.lsq_scale and torch.is_grad_enabled() and self.alpha.requires_grad
                    and x.dtype == torch.float32):
                s, _, z = self._learned_scale(x)
            else:
                s, z = scale_zero(*self.range_for(x), self.range_bits)
            return quantized_product(x, lambda v: self._quantize_sz(v, s, z), weight())
        if not self._sparse_input(x):
            return self(x) @ weight()
        self._track(x)
        Q = qmax(self.range_bits)
        s, s0, z = self._learned_scale(x)
        xc = x.detach().contiguous()
        s32, z32 = fused.f32(s0), fused.f32(z)
        # the grid fake_quant_fused uses: the 8-bit one truncated to 2-bit codes, or the plain one
        grid = (Q, BT_STEP, np.float32(float(self.kappa)), qmax(self.bits)) if self.truncation != "none" else (Q,)
        t_full = None
        if self._sparse_checked is None:  # first call: the dense t, kept for the check in backward
            xhat, t_full = fused.scale_factors(xc, s32, z32, *grid)
            t = t_full.view(-1).numpy()
            idx = np.flatnonzero(t)
            tv = t[idx]
            if idx.size > SPARSE_INPUT_MAX_DENSITY * t.size:  # not sparse: the dense product from now on
                self._sparse_checked = False
                idx, tv = None, None
        else:
            xhat, idx, tv = fused.sparse_scale_factors(xc, s32, z32, *grid)
        w = weight()
        if t_full is not None and (w.dim() != 2 or w.shape[1] > SPARSE_INPUT_MAX_K):
            self._sparse_checked = False  # this call: the dense product from t_full; later calls: the usual path
            idx, tv = None, None
        return _SparseInputAlphaGrad.apply(xhat @ w, s, w.detach().contiguous(), idx, tv, t_full, self)

    def _sparse_input(self, x: Tensor) -> bool:
        """Whether :meth:`matmul` may take the sampled α-gradient for ``x`` (decided for good after
        the first call: a dataset's features keep their sparsity)."""
        return (self._sparse_checked is not False and self.learn_alpha and not self.lsq_scale
                and torch.is_grad_enabled() and self.alpha.requires_grad and not x.requires_grad
                and x.dtype == torch.float32 and x.device.type == "cpu" and x.dim() == 2 and x.numel() > 0)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, truncation={self.truncation!r}, alpha={float(self.alpha):.4f}, "
                f"learn_alpha={self.learn_alpha}")


@QUANTIZERS.register("qlr-frozen")
class FrozenQLRQuantizer(QLRQuantizer):
    """QLR with α fixed at its grid-search value (the released code's behaviour; ablation)."""

    learn_alpha = False
