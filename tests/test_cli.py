"""The command line itself: ``--version``, ``train``'s progress lines, ``list`` and its cached index."""
from __future__ import annotations

import json
import re
import sys

import pytest

import bench_suite
from bench_suite.cli import main


def test_version_prints_package_commit_torch_and_dgl(capsys):
    import dgl
    import torch

    from bench_suite.env import git_commit

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"bench-suite {bench_suite.__version__}", f"git commit {git_commit()}",
                     f"torch {torch.__version__}", f"dgl {dgl.__version__}"]
    assert re.fullmatch(r"git commit ([0-9a-f]{40}(-dirty)?|unknown)", lines[1])
