"""Imports every module that registers a built-in plugin.

The core never imports ``baselines``; that package arrives through the
``bench_suite.plugins`` entry point like any third-party package.
"""
from __future__ import annotations

import importlib

BUILTIN_MODULES = (
    "bench_suite.data.datasets",
    "bench_suite.nn.models",
    "bench_suite.nn.propagations",
    "bench_suite.quant.fp32",
    "bench_suite.quant.qlr",
    "bench_suite.smp",
    "bench_suite.runner.executors",
)

for _name in BUILTIN_MODULES:
    importlib.import_module(_name)
