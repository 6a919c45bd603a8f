"""Baselines for bench_suite, registered as a plugin package.

This package reaches bench_suite only through the ``bench_suite.plugins`` entry
point and the public registry API, exactly as a third-party package would.
"""
import importlib
from pathlib import Path

from bench_suite.defaults import register_defaults_file

MODULES = ("qat", "dq", "residual", "jknet", "pairnorm", "dropedge", "gcnii", "dagnn", "elastic", "sgc")

for _name in MODULES:
    importlib.import_module(f"{__name__}.{_name}")

register_defaults_file(Path(__file__).with_name("defaults.yaml"))
