"""Conformance kit: the checks every registered plugin must pass.

Like timm's test that loops over every registered model, ``tests/test_conformance.py``
runs these functions over every key in every registry, so a plugin is tested the
moment it is registered.  Plugin authors can call them from their own tests::

    from bench_suite.testing import check_quantizer
    check_quantizer("my-quantizer")
"""
from __future__ import annotations

import inspect
import json
from typing import Iterable, Optional

import dgl
import torch

from bench_suite.bits import BITS, FP32_BITS, is_full_precision
from bench_suite.nn.graph import prepare_graph
from bench_suite.quant.base import NODE_ROLES, ROLES, QuantFactory
from bench_suite.registry import DATASETS, MODELS, PROPAGATIONS, QUANTIZERS, TRANSFORMS, Registry


def tiny_graph(n: int = 40, classes: int = 3, features: int = 8, seed: int = 0):
    """A small random symmetric graph with one isolated node and one hub."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n - 1, (3 * n,), generator=g)
    dst = torch.randint(0, n - 1, (3 * n,), generator=g)
    hub = torch.zeros(n - 2, dtype=torch.long)
    src = torch.cat([src, hub])
    dst = torch.cat([dst, torch.arange(1, n - 1)])
    graph = dgl.to_simple(dgl.remove_self_loop(dgl.to_bidirected(dgl.graph((src, dst), num_nodes=n))))
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.randn(n, features, generator=g) + torch.nn.functional.one_hot(y, features).float()
    return graph, x, y


#: the constructor's leading arguments the framework passes (``cls(*CONTRACT, **params)``) and
#: the ``forward`` arguments after ``self``, per plugin kind (README: "Writing a plugin")
CONSTRUCTOR_CONTRACT = {"model": ("in_dim", "num_classes", "depth", "quant"),
                        "propagation": ("depth", "quant"), "quantizer": ("bits", "role")}
FORWARD_CONTRACT = {"model": ("g", "x", "return_hidden"), "propagation": ("g", "h"),
                    "quantizer": ("x", "graph")}


def check_contract(reg: Registry, key: str) -> None:
    """The constructor takes the framework's arguments first, by these names (``cls(in_dim,
    num_classes, depth, quant, **params)`` for a model), and ``forward`` has the contract's
    arguments (a model's ``return_hidden`` and a quantizer's ``graph`` default to False / None)."""
    obj = reg.get(key)
    what = f"{reg.kind} {key!r} ({getattr(obj, '__qualname__', obj)})"
    params = [p for p in inspect.signature(obj).parameters.values()]
    want = CONSTRUCTOR_CONTRACT[reg.kind]
    got = tuple(p.name for p in params[:len(want)])
    assert got == want, f"{what}: constructor must start with ({', '.join(want)}), has ({', '.join(got)})"
    assert all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.POSITIONAL_ONLY) for p in params[:len(want)]), \
        f"{what}: ({', '.join(want)}) must be positional arguments"
    forward = getattr(obj, "forward", None)
    assert callable(forward), f"{what} has no forward method"
    fparams = [p for p in inspect.signature(forward).parameters.values() if p.name != "self"]
    fwant = FORWARD_CONTRACT[reg.kind]
    fgot = tuple(p.name for p in fparams[:len(fwant)])
    assert fgot == fwant, f"{what}: forward must take ({', '.join(fwant)}), takes ({', '.join(fgot)})"
    if reg.kind in ("model", "quantizer"):
        last = fparams[len(fwant) - 1]
        assert last.default in (False, None), f"{what}: forward's {last.name} must default to {False if reg.kind == 'model' else None}"


def check_range_rule(key: str, bits_list: Iterable[int] = BITS) -> None:
    """``bench-suite speed`` can run the quantizer: in evaluation mode its range is a
    :class:`~bench_suite.engine.ranges.RangeRule` (declared by a ``range_rule()`` method, else found
    by probing ``qparams``: static, or α·[min, max] of the tensor), for every role and width."""
    from dataclasses import fields

    from bench_suite.engine.ranges import RangeRule, rule_of

    if is_full_precision(QUANTIZERS.get(key)):
        return  # nothing to convert: full-precision runs are the engine's FP32 baseline
    graph = prepare_graph(tiny_graph()[0])
    allowed = {f.name for f in fields(RangeRule)} - {"bits"}
    for bits in bits_list:
        factory = QuantFactory(key, bits)
        for role in ROLES:
            torch.manual_seed(0)
            q = factory(role, layer=0)
            q.train()
            q(torch.randn(graph.num_nodes(), 6), graph if role in NODE_ROLES else None)  # initialise its range
            declared = getattr(q, "range_rule", None)
            if callable(declared):
                extra = set(declared()) - allowed
                assert not extra, f"quantizer {key!r}: range_rule() returns unknown fields {sorted(extra)}"
            try:
                rule = rule_of(q, f"quantizer {key!r} role {role!r}")
            except ValueError as exc:
                raise AssertionError(f"quantizer {key!r} at {bits} bits, role {role!r}: no range rule for the "
                                     f"integer engine ({exc})") from None
            assert rule.kind in ("static", "scaled_minmax"), f"quantizer {key!r}: range rule kind {rule.kind!r}"


def check_params_declared(reg: Registry, key: str) -> None:
    """Every user-settable parameter is an explicit keyword with a JSON-able default."""
    for p in reg.params(key):
        assert not p.required, f"{reg.kind} {key!r}: parameter {p.name!r} needs a default so specs can omit it"
        json.dumps(p.default)


def check_quantizer(key: str, bits_list: Iterable[int] = BITS) -> None:
    """Contract, shape, finiteness, at most 2^b levels in eval, gradients, state_dict round trip
    (a full-precision quantizer at 32 bits only)."""
    check_contract(QUANTIZERS, key)
    check_params_declared(QUANTIZERS, key)
    if is_full_precision(QUANTIZERS.get(key)):
        bits_list = (FP32_BITS,)
    graph = prepare_graph(tiny_graph()[0])
    n = graph.num_nodes()
    for bits in bits_list:
        factory = QuantFactory(key, bits)
        for role in ROLES:
            torch.manual_seed(0)
            q = factory(role, layer=0)
            x = (torch.randn(n, 6) * 2 + 0.5).requires_grad_(True)
            g = graph if role in NODE_ROLES else None
            q.train()
            y = q(x, g)
            assert y.shape == x.shape, f"quantizer {key!r} changed the shape for role {role}"
            assert torch.isfinite(y).all(), f"quantizer {key!r} produced non-finite values (bits={bits}, {role})"
            y.square().sum().backward()
            assert x.grad is not None and torch.isfinite(x.grad).all(), f"quantizer {key!r}: no gradient to x"
            assert x.grad.abs().sum() > 0, f"quantizer {key!r}: gradient to x is zero everywhere"
            q.eval()
            with torch.no_grad():
                ye = q(x, g)
            levels = torch.unique(ye).numel()
            assert levels <= 2 ** bits, f"quantizer {key!r} at {bits} bits gave {levels} distinct values"
            fresh = factory(role, layer=0)
            fresh.load_state_dict(q.state_dict())
            fresh.eval()
            with torch.no_grad():
                assert torch.equal(fresh(x, g), ye), f"quantizer {key!r}: state_dict round trip changed outputs"


def _model_forward_checks(model: torch.nn.Module, g, x, classes: int, what: str) -> None:
    model.train()
    out = model(g, x)
    assert out.shape == (x.shape[0], classes), f"{what}: output shape {tuple(out.shape)}"
    assert torch.isfinite(out).all(), f"{what}: non-finite output"
    out.logsumexp(1).sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(gr is not None and gr.abs().sum() > 0 for gr in grads), f"{what}: no parameter gets a gradient"
    model.eval()
    with torch.no_grad():
        logits, hidden = model(g, x, return_hidden=True)
    assert len(hidden) >= 1 and all(h.shape[0] == x.shape[0] for h in hidden), f"{what}: bad hidden states"
    with torch.no_grad():
        again = model(g, x)
    assert torch.equal(logits, again), f"{what}: eval forward is not deterministic"


def check_model(key: str, depths: Iterable[int] = (1, 2, 5), quant: Optional[str] = None,
                extra: Optional[dict] = None) -> None:
    """Contract; builds at several depths, trains a step, returns per-layer states; optionally quantized."""
    check_contract(MODELS, key)
    check_params_declared(MODELS, key)
    graph, x, y = tiny_graph()
    g = prepare_graph(graph)
    classes = int(y.max()) + 1
    factories = [QuantFactory()]
    if quant is not None:
        factories.append(QuantFactory(quant, 4))
    for depth in depths:
        for qf in factories:
            torch.manual_seed(0)
            model = MODELS.create(key, in_dim=x.shape[1], num_classes=classes, depth=depth, quant=qf, **(extra or {}))
            _model_forward_checks(model, g, x, classes, f"model {key!r} depth={depth} {qf}")


def check_propagation(key: str, depths: Iterable[int] = (1, 3), quant: Optional[str] = None) -> None:
    """Contract; a propagation runs inside the decoupled model."""
    check_contract(PROPAGATIONS, key)
    check_params_declared(PROPAGATIONS, key)
    check_model("decoupled", depths=depths, quant=quant, extra={"propagation": key})


def check_transform(key: str, params: Optional[dict] = None) -> None:
    """A transform returns a graph with the same nodes and no self-loops (the backbone adds Ã's);
    it must stay symmetric unless the transform says it need not (``symmetric=False``, as DropEdge
    samples each direction of an edge on its own in its authors' code)."""
    check_params_declared(TRANSFORMS, key)
    graph, _, _ = tiny_graph()
    t = TRANSFORMS.create(key, **(params or {}))
    out = t(graph)
    assert out.num_nodes() == graph.num_nodes(), f"transform {key!r} changed the node count"
    src, dst = out.edges()
    fwd = set(zip(src.tolist(), dst.tolist()))
    assert all(s != d for s, d in fwd), f"transform {key!r} added self-loops"
    if getattr(t, "symmetric", True):
        assert all((d, s) in fwd for s, d in fwd), f"transform {key!r} broke symmetry"


def check_dataset_plugin(key: str) -> None:
    """A dataset declares its parameters and has a ``load(seed)`` method."""
    check_params_declared(DATASETS, key)
    obj = DATASETS.get(key)
    assert callable(getattr(obj, "load", None)), f"dataset {key!r} has no load(seed) method"
    assert "seed" in inspect.signature(obj.load).parameters, f"dataset {key!r}: load() must take seed"
