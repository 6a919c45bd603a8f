from __future__ import annotations

import json
import subprocess
import sys

from bench_suite.registry import load_all
from bench_suite.spec import resolve_spec
from bench_suite.train import run

load_all()


def test_same_spec_and_seed_give_identical_results():
    spec = resolve_spec({"dataset": "csbm", "dataset.nodes": 400, "model": "gcn", "depth": 2, "epochs": 15, "seed": 3})
    a, b = run(spec), run(spec)
    assert a["metrics"] == {**b["metrics"], "epoch_ms_mean": a["metrics"]["epoch_ms_mean"],
                            "epoch_ms_median": a["metrics"]["epoch_ms_median"]}
    assert a["layers"] == b["layers"]
    other = run(resolve_spec({"dataset": "csbm", "dataset.nodes": 400, "model": "gcn", "depth": 2, "epochs": 15,
                              "seed": 4}))
    assert other["metrics"]["val_loss"] != a["metrics"]["val_loss"]


def test_record_carries_spec_env_and_selection_at_best_validation():
    spec = resolve_spec({"dataset": "csbm", "dataset.nodes": 400, "model": "decoupled", "depth": 5, "epochs": 30})
    rec = run(spec)
    assert rec["spec"] == spec.data and rec["run_id"] == spec.run_id
    assert rec["env"]["versions"]["dgl"] == "2.1.0" and rec["env"]["versions"]["torch"].startswith("2.2.1")
    m = rec["metrics"]
    assert 0 <= m["best_epoch"] < m["epochs_run"] <= 30
    assert len(rec["layers"]) == 5
    json.dumps(rec)


def test_deep_gcn_oversmooths():
    """Dirichlet energy of a 32-layer GCN collapses by orders of magnitude across layers."""
    spec = resolve_spec({"dataset": "csbm", "dataset.nodes": 600, "model": "gcn", "depth": 32, "epochs": 5})
    layers = run(spec)["layers"]
    first, last = layers[0]["dirichlet"], layers[-1]["dirichlet"]
    assert first > 0 and last / first < 1e-3, (first, last)
    shallow = run(resolve_spec({"dataset": "csbm", "dataset.nodes": 600, "model": "gcn", "depth": 2, "epochs": 5}))
    assert shallow["layers"][-1]["dirichlet"] / shallow["layers"][0]["dirichlet"] > 1e-2


def test_train_cli_prints_json_record():
    out = subprocess.run([sys.executable, "-m", "bench_suite.cli", "train", "dataset=csbm", "dataset.nodes=300",
                          "model=gcn", "depth=2", "seed=0", "epochs=3"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rec = json.loads(out.stdout)
    assert rec["status"] == "ok" and rec["spec"]["model"]["depth"] == 2 and "test_acc" in rec["metrics"]
    bad = subprocess.run([sys.executable, "-m", "bench_suite.cli", "train", "dataset=csbm", "model=gcn", "sed=0"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "'sed'" in bad.stderr and "seed" in bad.stderr


def test_foreach_adam_updates_equal_the_per_tensor_loop_bit_for_bit():
    """optimizer_for uses Adam's foreach implementation (speed: QLR has a scalar α per quantizer);
    its parameters after training steps must equal the per-tensor loop's exactly, α included."""
    import torch
    import torch.nn.functional as F

    from bench_suite.data.datasets import load_dataset
    from bench_suite.nn.graph import prepare_graph
    from bench_suite.train import build_model, optimizer_for

    spec = resolve_spec({"dataset": "csbm", "dataset.nodes": 300, "model": "gcn", "depth": 3, "quant": "qlr",
                         "bits": 4, "quant_lr": 0.01})
    data = load_dataset("csbm", seed=0, nodes=300)
    g = prepare_graph(data.graph)
    mask = data.train_mask & (data.labels >= 0)
    params = []
    for foreach in (True, False):
        torch.manual_seed(0)
        model = build_model(spec, data)
        opt = optimizer_for(model, spec.train)
        assert all(gr["foreach"] for gr in opt.param_groups) and len(opt.param_groups) == 2
        for gr in opt.param_groups:
            gr["foreach"] = foreach
        for _ in range(5):
            model.train()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(g, data.features)[mask], data.labels[mask]).backward()
            opt.step()
        params.append([p.detach().clone() for p in model.parameters()])
    assert len(params[0]) > 10
    assert all(torch.equal(a, b) for a, b in zip(*params))
    alphas = [float(m.alpha) for m in model.modules() if hasattr(m, "alpha")]
    assert alphas and any(abs(a - round(a, 1)) > 1e-6 for a in alphas)  # α moved off its grid value


def test_best_state_snapshot_restores_what_a_deep_copy_restores(monkeypatch):
    """fit keeps the best epoch's state as cloned tensors (state_snapshot), not a deep copy of the
    state dict: the same selected state, bit for bit, and the snapshot does not follow later training."""
    import copy

    import torch

    from bench_suite import train
    from bench_suite.data.datasets import load_dataset

    spec = resolve_spec({"dataset": "csbm", "dataset.nodes": 300, "model": "gcnii", "depth": 4, "quant": "qlr",
                         "bits": 4, "epochs": 25, "seed": 1})
    data = load_dataset("csbm", seed=0, nodes=300)
    runs = []
    for snapshot in (train.state_snapshot, lambda m: copy.deepcopy(m.state_dict())):
        monkeypatch.setattr(train, "state_snapshot", snapshot)
        train.seed_everything(1)
        model = train.build_model(spec, data)
        out = train.fit(model, data, spec.train)
        runs.append(({k: v for k, v in out.items() if not k.startswith("epoch_ms")}, model.state_dict()))
    (m1, s1), (m2, s2) = runs
    assert m1 == m2 and m1["best_epoch"] < m1["epochs_run"] - 1  # a later epoch ran after the selected one
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    model = train.build_model(spec, data)
    snap = train.state_snapshot(model)
    name, param = next(iter(model.named_parameters()))
    assert torch.equal(snap[name], param)
    with torch.no_grad():
        param.add_(1.0)
    assert not torch.equal(snap[name], param)
    assert getattr(snap, "_metadata", None) == getattr(model.state_dict(), "_metadata", None)


def test_binary_dataset_records_roc_auc_and_selects_on_it():
    """minesweeper is binary and imbalanced (80% one class): its literature reports ROC-AUC, so the record's
    ``test_score`` is the ROC-AUC (not the accuracy, which a majority vote makes ~0.80), both are stored."""
    from bench_suite.train import roc_auc

    spec = resolve_spec({"dataset": "minesweeper", "model": "gcn", "depth": 2, "epochs": 5, "seed": 0})
    m = run(spec)["metrics"]
    assert m["metric"] == "roc_auc"
    assert m["test_score"] == m["test_roc_auc"] != m["test_acc"]
    assert 0.0 <= m["test_roc_auc"] <= 1.0 and 0.0 <= m["val_roc_auc"] <= 1.0
    cora = run(resolve_spec({"dataset": "csbm", "dataset.nodes": 300, "model": "gcn", "depth": 2, "epochs": 3}))
    assert cora["metrics"]["metric"] == "accuracy" and cora["metrics"]["test_score"] == cora["metrics"]["test_acc"]
    assert "test_roc_auc" not in cora["metrics"]
    # the ROC-AUC itself: a perfect ranking scores 1, the reversed one 0, whatever the accuracy
    import torch

    labels = torch.tensor([0, 0, 0, 1, 1])
    mask = torch.ones(5, dtype=torch.bool)
    logits = torch.stack([torch.zeros(5), torch.tensor([-3.0, -2.0, -1.0, -0.5, -0.1])], 1)  # argmax: class 0
    assert roc_auc(logits, labels, mask) == 1.0
    assert roc_auc(-logits, labels, mask) == 0.0


def test_lr_decay_steps_the_model_group_only_and_leaves_default_run_ids_alone(monkeypatch):
    import torch

    seen = []
    real_step = torch.optim.Adam.step

    def step(self, *a, **k):
        seen.append([g["lr"] for g in self.param_groups])
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    base = {"dataset": "csbm", "dataset.nodes": 200, "model": "gcn", "depth": 2, "epochs": 7, "patience": 7,
            "quant": "qlr", "bits": 4, "lr": 0.01, "quant_lr": 0.001}
    run(resolve_spec({**base, "lr_decay": 0.5, "lr_decay_every": 3}))
    # the learning rate seen by the step of epoch e (0-based) is lr * 0.5 ** (e // 3); the quantizers' stays
    assert [round(lrs[0], 12) for lrs in seen] == [0.01, 0.01, 0.01, 0.005, 0.005, 0.005, 0.0025]
    assert all(lrs[1] == 0.001 for lrs in seen)
    # at its default (no decay) the key is left out of the canonical spec, so existing run ids hold
    plain = resolve_spec(base)
    assert "lr_decay" not in plain.data["train"] and "lr_decay_every" not in plain.data["train"]
    assert resolve_spec({**base, "lr_decay": 1.0, "lr_decay_every": 50}).run_id == plain.run_id
    assert resolve_spec({**base, "lr_decay": 0.7}).run_id != plain.run_id


def test_select_loss_keeps_the_lowest_validation_loss_epoch_and_score_the_best_score(monkeypatch):
    import pytest
    import torch.nn.functional as F

    import bench_suite.train as train_mod
    from bench_suite.spec import SpecError

    seen = []
    real_scores = train_mod.scores

    def spy(logits, data, split):
        out = real_scores(logits, data, split)
        if split == "val":
            mask = data.val_mask & (data.labels >= 0)
            seen.append((float(F.cross_entropy(logits[mask], data.labels[mask])), out["score"]))
        return out

    monkeypatch.setattr(train_mod, "scores", spy)
    base = {"dataset": "csbm", "dataset.nodes": 300, "model": "gcn", "depth": 2, "epochs": 40, "patience": 40, "seed": 1}
    by_loss = run(resolve_spec({**base, "select": "loss"}))["metrics"]
    losses = [loss for loss, _ in seen]
    last_min = max(i for i, v in enumerate(losses) if v == min(losses))
    assert by_loss["best_epoch"] == last_min and by_loss["val_loss"] == min(losses)
    seen.clear()
    by_score = run(resolve_spec(base))["metrics"]
    best = max(range(len(seen)), key=lambda i: (seen[i][1], -seen[i][0], -i))
    assert by_score["best_epoch"] == best
    assert by_loss["best_epoch"] != by_score["best_epoch"]  # the two rules pick different epochs on this run
    # the default leaves the key out of the canonical spec (existing run ids hold); a bad value is named
    assert "select" not in resolve_spec(base).data["train"]
    assert resolve_spec({**base, "select": "loss"}).run_id != resolve_spec(base).run_id
    with pytest.raises(SpecError, match=r"select='acc'.*use one of score, loss"):
        resolve_spec({**base, "select": "acc"})

