"""bench_suite: a reproducible benchmark suite for low-bit quantization of deep GNNs."""
import os as _os

_os.environ.setdefault("DGLBACKEND", "pytorch")
_os.environ.setdefault("OUTDATED_IGNORE", "1")  # ogb checks PyPI for updates at import

__version__ = "0.1.0"
