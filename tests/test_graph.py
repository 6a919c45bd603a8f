"""The per-layer oversmoothing metrics of bench_suite/nn/graph.py against values computed by hand.

The graph is the path 0 - 1 - 2; with self-loops Ã = A + I its degrees are d̃ = (2, 3, 2), so
Â = D̃^{-1/2} Ã D̃^{-1/2} has Â_00 = Â_22 = 1/2, Â_11 = 1/3, Â_01 = Â_12 = 1/√6.
The features are X = [[1, 0], [0, 1], [1, 1]].
"""
from __future__ import annotations

import math

import dgl
import pytest
import torch

from bench_suite.nn.graph import (dirichlet_energy, layer_metrics, mean_average_distance, prepare_graph,
                                  rayleigh_quotient)

X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])

# tr(XᵀX) = 1 + 1 + 2 = 4.
# tr(XᵀÂX) = Σ_ij Â_ij <x_i, x_j> = 1/2·1 + 1/3·1 + 1/2·2 + 2·(1/√6)·0 + 2·(1/√6)·1 = 11/6 + 2/√6.
# tr(XᵀL̃X) = 4 − 11/6 − 2/√6 = 13/6 − 2/√6 ≈ 1.350170
# (the same as the edge form Σ_{ij ∈ E} ‖x_i/√d̃_i − x_j/√d̃_j‖² = 5/6 + (4/3 − 2/√6)).
TRACE = 13 / 6 - 2 / math.sqrt(6)
DIRICHLET = TRACE / 3          # divided by n = 3: ≈ 0.450057
RAYLEIGH = TRACE / 4           # divided by tr(XᵀX) = 4: ≈ 0.337543
# cosine distances: (x0, x1) orthogonal → 1; (x1, x2) cos = 1/√2 → 1 − 1/√2.
# per node: 0 → 1; 1 → (1 + 1 − 1/√2)/2; 2 → 1 − 1/√2; mean = 1 − 1/(2√2) ≈ 0.646447
MAD = 1 - 1 / (2 * math.sqrt(2))


@pytest.fixture
def path3() -> dgl.DGLGraph:
    return prepare_graph(dgl.graph(([0, 1, 1, 2], [1, 0, 2, 1]), num_nodes=3))


def test_hand_computed_values_are_what_the_formulas_give():
    """The numbers above, written out in decimals (guards the hand algebra itself)."""
    assert DIRICHLET == pytest.approx(0.4500567, abs=1e-6)
    assert RAYLEIGH == pytest.approx(0.3375425, abs=1e-6)
    assert MAD == pytest.approx(0.6464466, abs=1e-6)


def test_dirichlet_energy_of_a_3_node_path(path3):
    assert dirichlet_energy(path3, X) == pytest.approx(DIRICHLET, rel=1e-6)


def test_rayleigh_quotient_of_a_3_node_path(path3):
    assert rayleigh_quotient(path3, X) == pytest.approx(RAYLEIGH, rel=1e-6)
    # scale-free: 10·X has 100 times the energy and the same quotient
    assert rayleigh_quotient(path3, 10 * X) == pytest.approx(RAYLEIGH, rel=1e-6)
    assert dirichlet_energy(path3, 10 * X) == pytest.approx(100 * DIRICHLET, rel=1e-6)


def test_mean_average_distance_of_a_3_node_path(path3):
    assert mean_average_distance(path3, X) == pytest.approx(MAD, rel=1e-6)


def test_oversmoothed_features_have_zero_energy_and_distance(path3):
    """x_i ∝ √d̃_i is the eigenvector of Â with eigenvalue 1: L̃x = 0; all rows point the same way."""
    smooth = torch.tensor([[math.sqrt(2)], [math.sqrt(3)], [math.sqrt(2)]]) * torch.tensor([[1.0, 2.0]])
    assert dirichlet_energy(path3, smooth) == pytest.approx(0.0, abs=1e-6)
    assert rayleigh_quotient(path3, smooth) == pytest.approx(0.0, abs=1e-6)
    assert mean_average_distance(path3, smooth) == pytest.approx(0.0, abs=1e-6)


def test_layer_metrics_reports_each_layer(path3):
    rows = layer_metrics(path3, [X, 10 * X])
    assert [r["layer"] for r in rows] == [0, 1]
    assert rows[0]["dirichlet"] == pytest.approx(DIRICHLET, rel=1e-6)
    assert rows[1]["dirichlet"] == pytest.approx(100 * DIRICHLET, rel=1e-6)
    assert rows[1]["dirichlet_normalized"] == pytest.approx(RAYLEIGH, rel=1e-6)
    assert rows[1]["mad"] == pytest.approx(MAD, rel=1e-6)
