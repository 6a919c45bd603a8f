"""The matrix's random search (bench_suite.runner.search, report.search) and the DropEdge authors'
GCN options it searches (batchnorm, self_weight, the first_order and bingge normalisations)."""
from __future__ import annotations

import textwrap

import dgl
import pytest
import torch

from bench_suite.nn.graph import normalized_aggregate, prepare_graph
from bench_suite.nn.models import DeepGCN
from bench_suite.quant.base import QuantFactory
from bench_suite.record import new_record
from bench_suite.registry import load_all
from bench_suite.report.search import best_rules, search_results, search_tables
from bench_suite.runner.matrix import MatrixError, load_matrix, search_runs
from bench_suite.spec import resolve_run

load_all()

SEARCH = """
name: tiny-search
seeds: [0, 1]
search:
  trials: 3
  seed: 7
  space:
    lr: {loguniform: [0.001, 0.01]}
    dropout: {choice: [0.1, 0.5]}
    batchnorm: {choice: [false, true]}
    p: {uniform: [0.2, 0.9], when: {transform: dropedge}}
axes:
  transform: [none, dropedge]
fixed: {dataset: csbm, model: gcn, depth: 3, epochs: 5}
include:
  - {dataset: csbm, model: gcn, depth: 2, epochs: 5, lr: 0.05}
"""


def _matrix(tmp_path, text=SEARCH, name="tiny-search.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_search_runs_every_combination_per_trial_with_paired_values(tmp_path):
    m = load_matrix(_matrix(tmp_path))
    runs = search_runs(m)
    assert len(runs) == 3 * 3 * 2  # trials x combinations x seeds
    assert [t for t, _, _ in runs] == sorted(t for t, _, _ in runs)  # trial by trial
    by_trial = {}
    for trial, base, flat in runs:
        by_trial.setdefault(trial, []).append((base, flat))
    draws = m.search.draws()
    assert len({repr(d) for d in draws}) == 3
    for trial, entries in by_trial.items():
        for base, flat in entries:
            assert flat["dropout"] == draws[trial]["dropout"] and flat["batchnorm"] == draws[trial]["batchnorm"]
            if base.get("transform") == "dropedge":
                assert flat["p"] == draws[trial]["p"]
            else:  # `when` keeps p off the runs without DropEdge
                assert "p" not in base and ("p" not in flat or flat["p"] != draws[trial]["p"])
            # a key the combination sets itself is not searched
            assert flat["lr"] == (0.05 if base.get("lr") == 0.05 else draws[trial]["lr"])
            resolve_run(flat)
    ids = [resolve_run(f).run_id for _, _, f in runs]
    assert len(set(ids)) == len(ids)
    # the same draws on every load: a resumed search runs the same trials
    assert [resolve_run(f).run_id for _, _, f in search_runs(load_matrix(_matrix(tmp_path)))] == ids


def test_adding_a_combination_leaves_the_other_runs_unchanged(tmp_path):
    ids = {resolve_run(f).run_id for _, _, f in search_runs(load_matrix(_matrix(tmp_path)))}
    fewer = SEARCH.replace("transform: [none, dropedge]", "transform: [none]")
    fewer_ids = {resolve_run(f).run_id for _, _, f in search_runs(load_matrix(_matrix(tmp_path, fewer, "b.yaml")))}
    assert fewer_ids < ids and len(ids - fewer_ids) == 3 * 2


def test_more_trials_keep_the_earlier_trials_runs(tmp_path):
    """Extending a search (trials 3 -> 5) adds runs and changes none: trial t's values do not depend
    on how many trials follow it, so finished trials keep their records."""
    m3 = load_matrix(_matrix(tmp_path))
    m5 = load_matrix(_matrix(tmp_path, SEARCH.replace("trials: 3", "trials: 5"), "five.yaml"))
    ids3 = {resolve_run(f).run_id for _, _, f in search_runs(m3)}
    by_trial5 = {}
    for t, _, f in search_runs(m5):
        by_trial5.setdefault(t, set()).add(resolve_run(f).run_id)
    assert set().union(*(by_trial5[t] for t in range(3))) == ids3
    assert (by_trial5[3] | by_trial5[4]) - ids3  # new runs (a run the include's own lr leaves equal to an
    # earlier trial's, with the same two-valued choices, is the same run and keeps its record)


@pytest.mark.parametrize("bad, says", [
    ("trials: 0", "search.trials=0"),
    ("trials: 3\n  speed: 1", "search key 'speed'"),
    ("trials: 3\n  select: test_score", "search.select='test_score'"),
])
def test_bad_search_blocks_name_the_key_and_what_is_valid(tmp_path, bad, says):
    text = SEARCH.replace("trials: 3", bad)
    with pytest.raises(MatrixError) as err:
        load_matrix(_matrix(tmp_path, text))
    assert says in str(err.value) and "tiny-search.yaml" in str(err.value)


@pytest.mark.parametrize("dim, says", [
    ("{loguniform: [0, 0.01]}", "0 < lo < hi"),
    ("{uniform: [0.5, 0.1]}", "lo < hi"),
    ("{choice: []}", "non-empty list"),
    ("{choice: [1], uniform: [0, 1]}", "exactly one of"),
])
def test_bad_dimensions_are_refused(tmp_path, dim, says):
    text = SEARCH.replace("{loguniform: [0.001, 0.01]}", dim)
    with pytest.raises(MatrixError) as err:
        load_matrix(_matrix(tmp_path, text))
    assert says in str(err.value) and "search.space.lr" in str(err.value)


def test_the_report_selects_by_validation_never_by_test(tmp_path):
    path = _matrix(tmp_path)
    m = load_matrix(path)
    records = []
    # trial 1 has the best validation score, trial 2 the best test score
    val = {0: 0.50, 1: 0.70, 2: 0.60}
    test = {0: 0.40, 1: 0.45, 2: 0.90}
    for trial, base, flat in search_runs(m):
        if trial == 0 and flat["seed"] == 1:
            continue  # a missing seed: the trial is ranked on the seeds it has
        spec = resolve_run(flat)
        records.append(new_record(spec, metrics={"val_score": val[trial] + 0.01 * flat["seed"],
                                                 "test_score": test[trial]}))
    results = search_results([path], records)
    assert len(results) == 3
    for r in results:
        assert [t["trial"] for t in r["trials"]] == [1, 2, 0]
        assert r["trials"][2]["n"] == 1 and r["trials"][0]["n"] == 2
        assert r["trials"][0]["val"] == pytest.approx(0.705)
    rules = best_rules(results)
    assert len(rules) == 3
    draws = m.search.draws()
    for rule in rules:
        # the search ran full precision; its best trial serves every quantizer unless it sets self_weight
        assert rule["match"].get("quant") == ("fp32" if draws[1].get("self_weight") is True else None)
        # the plain model's rule names transform: none (a spec without a transform matches it), so it
        # never ties with the DropEdge rule; the included 2-layer run (no transform axis value) names none
        assert rule["match"].get("transform") in ("none", "dropedge", None)
        assert rule["set"]["dropout"] == draws[1]["dropout"]
        assert ("p" in rule["set"]) == (rule["match"].get("transform") == "dropedge")
        assert "trial 1" in rule["source"] and "70.5" in rule["source"]
    table = search_tables(results)[0]
    assert table.rows[0][1] == "1" and table.bold[0][1]


def test_first_order_and_bingge_normalisations_match_their_formulas():
    src, dst = [0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]  # a path 0-1-2-3 and an isolated node 4
    g = prepare_graph(dgl.graph((src, dst), num_nodes=5))
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    a = torch.zeros(5, 5)
    a[dst, src] = 1.0
    d = a.sum(1)
    inv = torch.where(d > 0, d.clamp(min=1).rsqrt(), torch.zeros_like(d))
    first = torch.eye(5) + inv[:, None] * a * inv[None, :]
    at = a + torch.eye(5)
    dt = at.sum(1).rsqrt()
    bingge = torch.eye(5) + dt[:, None] * at * dt[None, :]
    assert torch.allclose(normalized_aggregate(g, x, norm="first_order"), first @ x, atol=1e-6)
    assert torch.allclose(normalized_aggregate(g, x, norm="bingge"), bingge @ x, atol=1e-6)


def test_batchnorm_and_self_weight_act_as_the_dropedge_layer():
    g = prepare_graph(dgl.graph(([0, 1, 1, 2], [1, 0, 2, 1]), num_nodes=3))
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    plain = DeepGCN(4, 2, 2, QuantFactory(), hidden=5, dropout=0.0, init="uniform").eval()
    torch.manual_seed(0)
    loop = DeepGCN(4, 2, 2, QuantFactory(), hidden=5, dropout=0.0, init="uniform", self_weight=True).eval()
    with torch.no_grad():
        for lp, ll in zip(plain.layers, loop.layers):
            ll.weight.copy_(lp.weight)
            ll.bias.copy_(lp.bias)
        h = torch.relu(plain.layers[0](g, x) + x @ loop.layers[0].weight_self)
        want = plain.layers[1](g, h) + h @ loop.layers[1].weight_self
        assert torch.allclose(loop(g, x), want, atol=1e-6)
    bn = DeepGCN(4, 2, 3, QuantFactory(), hidden=5, dropout=0.0, batchnorm=True).train()
    _, hidden = bn(g, x, return_hidden=True)
    for h in hidden:  # every layer's output, the last too, normalised over the nodes in training
        assert torch.allclose(h.mean(0), torch.zeros(h.shape[1]), atol=1e-5)


def test_self_weight_refuses_a_quantizer_batchnorm_and_the_identity_normalisations_do_not():
    with pytest.raises(ValueError) as err:
        DeepGCN(4, 2, 2, QuantFactory("qlr", 4), self_weight=True)
    assert "qlr" in str(err.value) and "full precision only" in str(err.value)
    for params in ({"batchnorm": True}, {"norm": "bingge"}, {"norm": "first_order"}):
        DeepGCN(4, 2, 2, QuantFactory("qlr", 4), **params)


class _Seen(torch.nn.Module):
    """A quantizer stand-in that keeps what it sees and returns it rounded to 1/8 (so a result that
    bypassed it would differ)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, g=None):
        self.seen.append(x.detach().clone())
        return torch.round(x * 8) / 8


@pytest.mark.parametrize("norm", ["bingge", "first_order"])
def test_the_identity_normalisations_quantize_their_normalised_aggregation(norm):
    """Quantized, I + Â·x is x plus the quantized normalised aggregation: ``message`` sees the
    source-scaled feature, ``aggregate`` the normalised sum (Â of the DropEdge authors' matrix, self
    loop included for bingge, left out for first_order), and the identity term is x itself."""
    src, dst = [0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]  # a path 0-1-2-3 and an isolated node 4
    g = prepare_graph(dgl.graph((src, dst), num_nodes=5))
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    a = torch.zeros(5, 5)
    a[dst, src] = 1.0
    if norm == "bingge":
        a = a + torch.eye(5)
    d = a.sum(1)
    inv = torch.where(d > 0, d.clamp(min=1).rsqrt(), torch.zeros_like(d))
    qm, qa = _Seen(), _Seen()
    out = normalized_aggregate(g, x, qm, qa, norm=norm)
    assert torch.allclose(qm.seen[0], x * inv[:, None], atol=1e-6)
    m = torch.round(x * inv[:, None] * 8) / 8
    assert torch.allclose(qa.seen[0], inv[:, None] * (a @ m), atol=1e-6)
    assert torch.allclose(out, x + torch.round(inv[:, None] * (a @ m) * 8) / 8, atol=1e-6)
    # without quantizers: the formula of test_first_order_and_bingge_normalisations_match_their_formulas
    assert torch.equal(normalized_aggregate(g, x, norm=norm), normalized_aggregate(g, x, None, None, norm))


def test_quantized_batchnorm_normalises_the_quantized_layer_output():
    """Batch norm sits after each layer's ``update`` quantizer, in float, as in full precision."""
    g = prepare_graph(dgl.graph(([0, 1, 1, 2], [1, 0, 2, 1]), num_nodes=3))
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    model = DeepGCN(4, 2, 3, QuantFactory("qlr", 4), hidden=5, dropout=0.0, batchnorm=True).train()
    _, hidden = model(g, x, return_hidden=True)
    for h in hidden:
        assert torch.allclose(h.mean(0), torch.zeros(h.shape[1]), atol=1e-5)


def test_the_new_options_at_their_defaults_keep_every_run_id():
    spec = resolve_run({"dataset": "cora", "model": "gcn", "depth": 2})
    assert "batchnorm" not in spec.canonical and "self_weight" not in spec.canonical
    on = resolve_run({"dataset": "cora", "model": "gcn", "depth": 2, "batchnorm": True})
    assert '"batchnorm":true' in on.canonical and on.run_id != spec.run_id


@pytest.mark.parametrize("params, says", [({"batchnorm": True}, "batchnorm"), ({"norm": "bingge"}, "norm='bingge'")])
def test_the_integer_engine_refuses_what_is_not_the_plain_gcn_layer(params, says):
    from bench_suite.engine.convert import convert

    model = DeepGCN(4, 2, 2, QuantFactory("qlr", 4), hidden=5, **params)
    with pytest.raises(ValueError) as err:
        convert(model)
    assert says in str(err.value) and "supported" in str(err.value)


def test_self_weight_with_a_quantizer_fails_when_the_spec_is_resolved():
    from bench_suite.spec import SpecError

    with pytest.raises(SpecError) as err:
        resolve_run({"dataset": "cora", "model": "gcn", "depth": 2, "quant": "qlr", "bits": 4, "self_weight": True})
    assert "self_weight" in str(err.value) and "full precision only" in str(err.value) and "'qlr'" in str(err.value)
    resolve_run({"dataset": "cora", "model": "gcn", "depth": 2, "self_weight": True})  # full precision: valid
    for key, value in (("batchnorm", True), ("norm", "first_order"), ("norm", "bingge")):
        resolve_run({"dataset": "cora", "model": "gcn", "depth": 2, "quant": "qlr", "bits": 4, key: value})


def test_searched_defaults_reach_matrices_that_leave_the_width_to_the_defaults():
    """The search ran at hidden 128 (the Cora GCN rule's width); its rules must apply to a spec that does
    not write ``hidden`` (breadth, depth, paper-lite), as to one that does (reproduce)."""
    from bench_suite.defaults import apply_defaults

    for flat in ({"dataset": "cora", "model": "gcn", "depth": 8},
                 {"dataset": "cora", "model": "gcn", "depth": 8, "hidden": 128}):
        d = apply_defaults(dict(flat, transform="dropedge"))
        assert (d["hidden"], d["lr"], d["norm"], d["p"]) == (128, 0.00139, "bingge", 0.769), d
        assert apply_defaults(dict(flat))["lr"] == 0.00139
    assert apply_defaults({"dataset": "cora", "model": "gcn", "depth": 2})["lr"] == 0.007  # the 2-layer script
    # quantized runs get the full-precision setting too (BingGe's identity term and batch norm in float)
    q = apply_defaults({"dataset": "cora", "model": "gcn", "depth": 8, "quant": "qlr", "bits": 4})
    assert (q["lr"], q["norm"]) == (0.00139, "bingge")
    resolve_run(q)


def test_best_rules_leave_out_match_keys_the_defaults_imply():
    from bench_suite.report.search import implied_keys_left_out

    # hidden 128 is what the Cora GCN rule sets; depth and the transform are not implied
    assert implied_keys_left_out({"dataset": "cora", "model": "gcn", "hidden": 128, "depth": 16,
                                  "transform": "dropedge"}) == {"dataset": "cora", "model": "gcn", "depth": 16,
                                                               "transform": "dropedge"}
    # a width the defaults do not give stays in the match
    assert implied_keys_left_out({"dataset": "cora", "model": "gcn", "hidden": 64, "depth": 16})["hidden"] == 64


def test_a_best_trial_with_self_weight_serves_full_precision_and_the_best_quantizable_one_the_quantizers(
        monkeypatch):
    from bench_suite.defaults import defaults_for

    combo = {"dataset": "citeseer", "model": "gcn", "depth": 8, "seed": 0}
    trial = lambda k, sw, val: {"trial": k, "values": {"lr": 0.001 * (k + 1), "self_weight": sw}, "val": val,
                                "seeds": [0], "n": 1}
    results = [{"matrix": "m", "combo": combo, "of": 3,
                "trials": [trial(2, True, 0.65), trial(0, True, 0.64), trial(1, False, 0.62)]}]
    rules = best_rules(results)
    assert [(r["match"].get("quant"), r["set"]["lr"]) for r in rules] == [("fp32", 0.003), (None, 0.002)]
    assert "trial 2" in rules[0]["source"] and "trial 1" in rules[1]["source"] and "quantizable" in rules[1]["source"]
    # as defaults: FP32 (a spec naming no quantizer) takes trial 2, a quantized spec trial 1
    import bench_suite.defaults as D

    monkeypatch.setattr(D, "rules", lambda: rules)
    assert defaults_for({"dataset": "citeseer", "model": "gcn", "depth": 8})["lr"] == 0.003
    assert defaults_for({"dataset": "citeseer", "model": "gcn", "depth": 8, "quant": "qlr"})["lr"] == 0.002
    # the plain model's rule and the transform's, both for full precision: no tie, each spec gets its own
    plain = {"matrix": "m", "combo": dict(combo, transform="none"), "of": 3, "trials": [trial(2, True, 0.65)]}
    de = {"matrix": "m", "combo": dict(combo, transform="dropedge"), "of": 3,
          "trials": [{"trial": 0, "values": {"lr": 0.5, "self_weight": False, "p": 0.3}, "val": 0.6, "seeds": [0], "n": 1}]}
    both = best_rules([plain, de])
    assert both[0]["match"] == {"dataset": "citeseer", "model": "gcn", "depth": 8, "transform": "none", "quant": "fp32"}
    monkeypatch.setattr(D, "rules", lambda: both)
    assert defaults_for({"dataset": "citeseer", "model": "gcn", "depth": 8, "transform": "dropedge"})["lr"] == 0.5
    assert defaults_for({"dataset": "citeseer", "model": "gcn", "depth": 8, "transform": None})["lr"] == 0.003
    # no quantizable trial: the full-precision rule alone
    results[0]["trials"] = results[0]["trials"][:2]
    assert [r["match"].get("quant") for r in best_rules(results)] == ["fp32"]
