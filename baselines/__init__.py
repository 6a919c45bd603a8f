"""Baselines for bench_suite, registered as a plugin package.

This package reaches bench_suite only through the ``bench_suite.plugins`` entry
point and the public registry API, exactly as a third-party package would.
"""
import importlib

MODULES = ("qat", "dq")

for _name in MODULES:
    importlib.import_module(f"{__name__}.{_name}")
