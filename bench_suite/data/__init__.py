"""Datasets: DGL's and OGB's own loaders over a data directory, and generated graphs."""
from bench_suite.data.base import DATA_ENV, GraphData, resolve_data_dir  # noqa: F401
