"""One training run: ``spec → record`` (METHOD.md §10).

Adam (a separate group for quantizer parameters such as QLR's α; an optional step decay of the
model parameters' learning rate, ``lr_decay`` every ``lr_decay_every`` epochs), full-batch,
model selected at the epoch of the best validation score (the dataset's metric:
accuracy, or ROC-AUC for the binary heterophilous sets; ties: lower validation
loss), or with ``select: loss`` at the lowest validation loss (ties: the later epoch; the DropEdge
authors' rule), test scores reported at that epoch (``test_score`` in the dataset's metric,
``test_acc`` always), early stopping after ``patience`` epochs without improvement.
Fixed seeds give identical results on the CPU.
"""
from __future__ import annotations

import copy
import math
import random
import time
from collections import OrderedDict
from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F

from bench_suite.data.base import GraphData
from bench_suite.env import environment
from bench_suite.nn.graph import layer_metrics, prepare_graph
from bench_suite.quant.base import QuantFactory, Quantizer
from bench_suite.record import OK, new_record
from bench_suite.registry import MODELS, TRANSFORMS
from bench_suite.sparse import features_for
from bench_suite.spec import RunSpec, spec_plugins


class NonFiniteLoss(FloatingPointError):
    """Training produced a NaN or infinite loss."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    import dgl

    dgl.seed(seed)


def build_model(spec: RunSpec, data: GraphData) -> torch.nn.Module:
    d = spec.data
    quant = QuantFactory(d["quant"]["name"], d["quant"]["bits"],
                         {k: v for k, v in d["quant"].items() if k not in ("name", "bits")})
    params = {k: v for k, v in d["model"].items() if k not in ("name", "depth")}
    if d.get("propagation"):
        prop = dict(d["propagation"])
        params["propagation"] = prop.pop("name")
        params["propagation_params"] = prop
    return MODELS.create(d["model"]["name"], in_dim=data.num_features, num_classes=data.num_classes,
                         depth=d["model"]["depth"], quant=quant, **params)


def build_transform(spec: RunSpec):
    t = spec.data.get("transform")
    if not t:
        return None
    params = {k: v for k, v in t.items() if k != "name"}
    return TRANSFORMS.create(t["name"], **params)


def optimizer_for(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    quant_params, quant_ids = [], set()
    for m in model.modules():
        if isinstance(m, Quantizer):
            for p in m.parameters(recurse=False):
                if p.requires_grad and id(p) not in quant_ids:
                    quant_params.append(p)
                    quant_ids.add(id(p))
    other = [p for p in model.parameters() if p.requires_grad and id(p) not in quant_ids]
    groups = [{"params": other, "lr": cfg.lr, "weight_decay": cfg.weight_decay}]
    if quant_params:
        groups.append({"params": quant_params, "lr": cfg.quant_lr, "weight_decay": 0.0, "name": "quant"})
    # foreach: one C++ loop per update op over all tensors of a group instead of a Python loop over
    # tensors (QLR has a scalar α per quantizer, ~100 on a 16-layer GCN); the same per-tensor
    # kernels, so the same values (checked bit for bit in tests/test_train.py)
    return torch.optim.Adam(groups, foreach=True)


def accuracy(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> float:
    idx = mask & (labels >= 0)
    n = int(idx.sum())
    if n == 0:
        return float("nan")
    return float((logits[idx].argmax(1) == labels[idx]).float().mean())


def roc_auc(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> float:
    """ROC-AUC of the positive class (label 1) of a binary problem, from the softmax score."""
    from sklearn.metrics import roc_auc_score

    idx = mask & (labels >= 0)
    y = labels[idx].numpy()
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, torch.softmax(logits[idx].double(), 1)[:, 1].numpy()))


#: metric name (a dataset's ``metric``) -> (its key in a record, function of (logits, labels, mask))
METRICS = {"accuracy": ("acc", accuracy), "roc_auc": ("roc_auc", roc_auc)}


def scores(logits: torch.Tensor, data: GraphData, split: str) -> Dict[str, float]:
    """``{acc, roc_auc (binary problems), score}`` on one split; ``score`` is the dataset's metric."""
    mask = getattr(data, f"{split}_mask")
    names = ["accuracy"] + (["roc_auc"] if data.num_classes == 2 else [])
    names += [data.metric] if data.metric not in names else []
    out = {METRICS[n][0]: METRICS[n][1](logits, data.labels, mask) for n in names}
    out["score"] = out[METRICS[data.metric][0]]
    return out


def state_snapshot(model: torch.nn.Module) -> Dict[str, Any]:
    """A copy of ``model.state_dict()`` for :meth:`torch.nn.Module.load_state_dict`: every tensor cloned
    (the same values; a deep copy of the dict took 4x as long on a quantized GCNII-64, whose ~1,600
    entries are mostly 0-dim quantizer buffers), other entries deep-copied, the version metadata kept."""
    state = model.state_dict()
    snap = OrderedDict((k, v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)) for k, v in state.items())
    snap._metadata = getattr(state, "_metadata", None)  # type: ignore[attr-defined]
    return snap


def fit(model: torch.nn.Module, data: GraphData, cfg, transform=None, progress=None) -> Dict[str, Any]:
    """Train ``model`` on ``data``; returns metrics and leaves the best state loaded."""
    g = prepare_graph(data.graph)
    x, y = features_for(model, data.features), data.labels
    train_idx = data.train_mask & (y >= 0)
    opt = optimizer_for(model, cfg)
    best = (-1.0, math.inf)
    best_state, best_epoch, since = None, -1, 0
    out: Dict[str, Any] = {}
    epoch_times = []
    loss_val = float("nan")
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        model.train()
        gt = prepare_graph(transform(data.graph)) if transform is not None else g
        opt.zero_grad(set_to_none=True)
        logits = model(gt, x)
        loss = F.cross_entropy(logits[train_idx], y[train_idx])
        loss_val = float(loss)
        if not math.isfinite(loss_val):
            raise NonFiniteLoss(f"loss became {loss_val} at epoch {epoch}")
        loss.backward()
        opt.step()
        if cfg.lr_decay != 1.0 and (epoch + 1) % cfg.lr_decay_every == 0:
            opt.param_groups[0]["lr"] *= cfg.lr_decay  # the model's group; quantizer ranges keep theirs
        epoch_times.append(time.perf_counter() - t0)
        model.eval()
        with torch.no_grad():
            logits = model(g, x)
            val_mask = data.val_mask & (y >= 0)
            val_loss = float(F.cross_entropy(logits[val_mask], y[val_mask]))
            val = scores(logits, data, "val")
        improved = (val_loss <= best[1] if cfg.select == "loss"
                    else (val["score"], -val_loss) > (best[0], -best[1]))
        if improved:
            best = (val["score"], val_loss)
            best_epoch, since = epoch, 0
            best_state = state_snapshot(model)
            out = {"metric": data.metric, "val_loss": val_loss}
            for split, part in (("val", val), ("test", scores(logits, data, "test")),
                                ("train", scores(logits, data, "train"))):
                out.update({f"{split}_{k}": v for k, v in part.items()})
        else:
            since += 1
        if progress is not None:
            progress(epoch, loss_val, val["score"])
        if since >= cfg.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    out.update({
        "best_epoch": best_epoch,
        "epochs_run": epoch + 1,
        "final_train_loss": loss_val,
        "epoch_ms_mean": 1000 * float(np.mean(epoch_times)) if epoch_times else float("nan"),
        "epoch_ms_median": 1000 * float(np.median(epoch_times)) if epoch_times else float("nan"),
    })
    return out


def evaluate_layers(model: torch.nn.Module, data: GraphData) -> list:
    """Per-layer Dirichlet energy and MAD of the (selected) model in eval mode."""
    g = prepare_graph(data.graph)
    model.eval()
    with torch.no_grad():
        _, hidden = model(g, features_for(model, data.features), return_hidden=True)
    return layer_metrics(g, hidden)


def run(spec: RunSpec, data_dir: Optional[str] = None, download: bool = False,
        data: Optional[GraphData] = None, progress=None) -> Dict[str, Any]:
    """Execute one run and return its ``ok`` record (:func:`bench_suite.record.new_record`; the runner
    adds where and when it ran).

    ``progress(epoch, train_loss, val_score)`` is called after every epoch (see :func:`fit`)."""
    d = spec.data
    cfg = spec.train
    t0 = time.perf_counter()
    ds = {k: v for k, v in d["dataset"].items() if k != "name"}
    if data is None:
        from bench_suite.data.datasets import load_dataset

        data = load_dataset(d["dataset"]["name"], seed=cfg.seed, data_dir=data_dir, download=download, **ds)
    t_load = time.perf_counter() - t0
    seed_everything(cfg.seed)
    model = build_model(spec, data)
    transform = build_transform(spec)
    t1 = time.perf_counter()
    metrics = fit(model, data, cfg, transform, progress=progress)
    t_train = time.perf_counter() - t1
    layers = evaluate_layers(model, data)
    return new_record(
        spec, OK,
        metrics=metrics,
        layers=layers,
        extra=_jsonable(model.extra_metrics() if hasattr(model, "extra_metrics") else {}),
        data=data.summary(),
        timings={"load_s": t_load, "train_s": t_train, "total_s": time.perf_counter() - t0},
        env=dict(environment(), plugins=spec_plugins(d)),
    )


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj
