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


# -- list and its cached plugin index -----------------------------------------------------------

def test_list_from_the_cached_index_prints_what_the_registries_give(tmp_path, monkeypatch, capsys):
    from bench_suite import plugin_index
    from bench_suite.registry import load_all

    monkeypatch.setenv("BENCH_SUITE_CACHE", str(tmp_path))
    load_all()
    assert main(["list", "--plugin", "bench_suite.nn.models"]) == 0  # with --plugin: no index, the registries
    slow = capsys.readouterr().out
    assert main(["list"]) == 0  # builds and stores the index
    assert capsys.readouterr().out == slow and plugin_index.index_path().is_file()

    def no_import(*args, **kwargs):
        raise AssertionError("the index is current: nothing should be imported or rebuilt")

    monkeypatch.setattr(plugin_index, "build_index", no_import)
    monkeypatch.setattr("bench_suite.registry.load_all", no_import)
    assert main(["list"]) == 0
    assert capsys.readouterr().out == slow
    assert main(["list", "quantizer"]) == 0
    quantizers = capsys.readouterr().out
    assert quantizers.startswith("quantizers:\n") and quantizers.strip() in slow
    assert "  qlr " in quantizers


def test_list_index_is_rebuilt_when_a_plugin_file_changes(tmp_path):
    """A third-party plugin package (entry point) is listed from the index until its file changes."""
    import subprocess
    import textwrap
    from pathlib import Path

    plug = tmp_path / "site" / "ux_plugin"
    plug.mkdir(parents=True)
    meta = tmp_path / "site" / "ux_plugin-0.1.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: ux-plugin\nVersion: 0.1\n")
    (meta / "entry_points.txt").write_text("[bench_suite.plugins]\nux_plugin = ux_plugin\n")
    source = textwrap.dedent('''
        from bench_suite.registry import TRANSFORMS

        @TRANSFORMS.register("ux-shuffle")
        class Shuffle:
            """DOC."""

            def __init__(self, p: float = 0.25) -> None:
                self.p = p
    ''')
    (plug / "__init__.py").write_text(source.replace("DOC", "Version one"))
    code = ("import sys; from bench_suite.cli import main; rc = main(['list', 'transforms']); "
            "print('imported torch:', 'torch' in sys.modules, file=sys.stderr); sys.exit(rc)")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path / "site"), "BENCH_SUITE_CACHE": str(tmp_path / "cache"),
           "OUTDATED_IGNORE": "1", "OMP_NUM_THREADS": "1"}

    def listing():
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                             cwd=Path(__file__).resolve().parents[1])
        assert out.returncode == 0, out.stderr
        return out.stdout, "imported torch: True" in out.stderr

    first, imported = listing()
    assert "ux-shuffle" in first and "Version one." in first and "p=0.25" in first and imported
    again, imported = listing()
    assert again == first and not imported  # from the index: no plugin, no torch
    (plug / "__init__.py").write_text(source.replace("DOC", "Version two").replace("0.25", "0.5"))
    changed, imported = listing()
    assert "Version two." in changed and "p=0.5" in changed and "Version one." not in changed and imported
    assert changed.replace("Version two", "Version one").replace("p=0.5", "p=0.25") == first
