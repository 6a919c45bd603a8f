"""The benchmark runner: matrix files → run specs → executor → one record per run in a store.

Public API::

    from bench_suite.runner import load_matrix, expand_matrix, ResultStore, run_specs
    specs = expand_matrix(load_matrix("smoke"))
    run_specs(specs, ResultStore("results/smoke"), EXECUTORS.create("local", workers=2))
"""
from __future__ import annotations

from bench_suite.runner.matrix import Matrix, MatrixError, expand_matrix, load_matrix
from bench_suite.runner.session import plan, run_specs
from bench_suite.runner.store import ResultStore

__all__ = ["Matrix", "MatrixError", "ResultStore", "expand_matrix", "load_matrix", "plan", "run_specs"]
