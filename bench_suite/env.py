"""The environment a record was produced in: versions, git commit, host, CPU, threads."""
from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of this checkout, ``-dirty`` when its code differs from it (see :func:`git_state`)."""
    return git_state(Path(__file__).resolve().parents[1])


def git_state(root: Path) -> str:
    """``HEAD`` of the repository at ``root``, plus ``-dirty`` if a tracked file outside
    ``results/`` and ``reports/`` is changed (records and reports are data, not code)."""
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        commit = out.stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":(exclude)results", ":(exclude)reports"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.lru_cache(maxsize=1)
def versions() -> dict:
    import dgl
    import numpy
    import torch

    import bench_suite

    return {
        "bench_suite": bench_suite.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "dgl": dgl.__version__,
        "numpy": numpy.__version__,
    }


def version_lines() -> list[str]:
    """What ``bench-suite --version`` prints, one line each: the package, this checkout's commit, torch, dgl."""
    v = versions()
    return [f"bench-suite {v['bench_suite']}", f"git commit {git_commit()}", f"torch {v['torch']}",
            f"dgl {v['dgl']}"]


def environment() -> dict:
    import torch

    return {
        "versions": versions(),
        "git_commit": git_commit(),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
