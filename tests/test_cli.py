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


TRAIN = ["train", "dataset=csbm", "dataset.nodes=200", "model=gcn", "depth=2", "epochs=2", "patience=100"]
LINE = re.compile(r"epoch (\d+)/(\d+)  loss (\S+)  val (\S+)  best (\S+)  elapsed (\d+\.\d)s")


def test_train_verbose_prints_one_line_per_epoch_on_stderr_and_only_json_on_stdout(capsys):
    assert main(TRAIN + ["-v"]) == 0
    out = capsys.readouterr()
    record = json.loads(out.out)  # stdout is the record and nothing else
    assert record["status"] == "ok" and record["metrics"]["epochs_run"] == 2
    lines = [LINE.fullmatch(line) for line in out.err.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2 and all(lines), out.err
    assert [(int(m[1]), int(m[2])) for m in lines] == [(1, 2), (2, 2)]
    vals = [float(m[4]) for m in lines]
    assert [float(m[5]) for m in lines] == [vals[0], max(vals)]  # best so far
    assert float(lines[-1][3]) == pytest.approx(record["metrics"]["final_train_loss"], abs=1e-4)


def test_train_without_verbose_prints_no_epoch_lines_off_a_terminal(capsys):
    assert main(TRAIN) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["status"] == "ok"
    assert "epoch 1/2" not in out.err and "epoch/s" not in out.err


class _Terminal:
    """A stream that says it is a terminal (a tqdm bar draws on it) and keeps what is written."""

    def __init__(self) -> None:
        self.text = ""

    def isatty(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self.text += s
        return len(s)

    def flush(self) -> None:
        pass


def test_epoch_progress_is_a_bar_on_a_terminal_lines_with_verbose_and_nothing_otherwise():
    import io

    from bench_suite.cli_train import epoch_progress

    term = _Terminal()
    bar = epoch_progress(3, verbose=False, stream=term)
    for epoch, (loss, val) in enumerate([(1.5, 0.5), (1.2, 0.7), (1.1, 0.6)]):
        bar(epoch, loss, val)
    bar.close()
    assert "3/3" in term.text and "best=0.7000" in term.text and "epoch 1/3" not in term.text

    lines = io.StringIO()
    verbose = epoch_progress(3, verbose=True, stream=lines)
    verbose(0, 1.5, float("nan"))  # a validation score that is not defined yet (one class) is no best
    verbose(1, 1.2, 0.7)
    assert [line.split("  ")[3] for line in lines.getvalue().splitlines()] == ["best nan", "best 0.7000"]
    assert epoch_progress(3, verbose=False, stream=io.StringIO()) is None
