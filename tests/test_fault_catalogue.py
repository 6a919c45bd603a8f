"""The bad-input and fault catalogue: every case a command given a bad value, a bad file or a
fault it cannot work around, tried as a new user (a typo) and an attacker (a path as a name)
would.  Each must end with exit code 2, exactly one line on stderr naming the bad value,
nothing on stdout and nothing written anywhere under the working folder.

Cases run in-process through :func:`bench_suite.cli.main` (no training starts in any of them),
so the module stays fast.  Other modules hold more cases of the same kind; :data:`ELSEWHERE`
counts them, and ``test_the_catalogue_has_at_least_80_cases`` keeps the total the README states.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import pytest

from bench_suite import registry as R
from bench_suite.cli import main
from bench_suite.data import datasets as D

GOOD = "name: ok\nseeds: [0]\nfixed: {dataset: csbm, dataset.nodes: 100, model: gcn, depth: 2, epochs: 2}\n"
TRAIN = ["train", "dataset=csbm", "dataset.nodes=100", "model=gcn", "epochs=2"]
RUN = ["run", "ok.yaml", "--results", "res", "--no-progress"]

BROKEN_PLUGIN = ("from bench_suite.registry import MODELS\n"
                 "MODELS.register('planted-half', lambda in_dim, num_classes, depth, quant: None)\n"
                 "raise ImportError('planted: cannot import name torch_scatter')\n")


def matrix(text: str) -> Callable[[Path], None]:
    """Setup: write ``m.yaml`` with ``text``."""
    return lambda root: (root / "m.yaml").write_text(text)


def setups(*fns: Callable[[Path], None]) -> Callable[[Path], None]:
    def run(root: Path) -> None:
        for fn in fns:
            fn(root)
    return run


def a_file(name: str, text: str = "") -> Callable[[Path], None]:
    return lambda root: (root / name).write_text(text)


def a_dir(name: str) -> Callable[[Path], None]:
    return lambda root: (root / name).mkdir(parents=True, exist_ok=True)


def no_slurm(root: Path) -> None:
    os.environ["PATH"] = str(root / "no-bin")  # restored by the fixture


def broken_plugin(root: Path) -> None:
    (root / "broken_plug.py").write_text(BROKEN_PLUGIN)


def a_bad_symlink(name: str) -> Callable[[Path], None]:
    return lambda root: (root / name).symlink_to(root / "nowhere" / "x.yaml")


#: (id, argv, substrings the one stderr line must hold, setup)
Case = Tuple[str, List[str], Tuple[str, ...], Optional[Callable[[Path], None]]]
CASES: List[Case] = [
    # -- train: plugin keys --------------------------------------------------------------------
    ("unknown-quantizer", [*TRAIN, "quant=qlrr", "bits=4"], ("unknown quantizer 'qlrr'", "qlr"), None),
    ("unknown-transform", [*TRAIN, "transform=dropegde"], ("unknown transform 'dropegde'", "dropedge"), None),
    ("unknown-propagation", ["train", "dataset=csbm", "model=decoupled", "propagation=appnpp"],
     ("unknown propagation 'appnpp'", "appnp"), None),
    ("unknown-prefixed-key", [*TRAIN, "model.hiddn=8"], ("'hiddn'", "model gcn", "hidden"), None),
    ("unknown-section", [*TRAIN, "modle.hidden=8"], ("unknown spec section 'modle'", "model"), None),
    ("missing-model", ["train", "dataset=csbm"], ("missing required key 'model'", "gcn"), None),
    ("missing-dataset", ["train", "model=gcn"], ("missing required key 'dataset'", "csbm"), None),
    ("not-key-value", [*TRAIN, "depth"], ("'depth'", "not key=value"), None),
    ("empty-key", [*TRAIN, "=4"], ("'=4'", "not key=value"), None),
    # -- train: values -------------------------------------------------------------------------
    ("bits-with-fp32", [*TRAIN, "bits=4"], ("bits=4", "quant=fp32"), None),
    ("quant-without-bits", [*TRAIN, "quant=qlr"], ("quant='qlr'", "needs bits", "8, 4, 2"), None),
    ("bits-3", [*TRAIN, "quant=qlr", "bits=3"], ("bits=3", "8, 4, 2"), None),
    ("bits-text", [*TRAIN, "quant=dq", "bits=four"], ("bits='four'", "8, 4, 2"), None),
    ("depth-129", [*TRAIN, "depth=129"], ("depth=129", "1..128"), None),
    ("depth-fraction", [*TRAIN, "depth=2.5"], ("depth=2.5", "1..128"), None),
    ("hidden-negative", [*TRAIN, "hidden=-8"], ("hidden=-8", ">= 1"), None),
    ("hidden-text", [*TRAIN, "hidden=wide"], ("hidden='wide'", "wrong type", "int"), None),
    ("hidden-fraction", [*TRAIN, "hidden=8.5"], ("hidden=8.5", "wrong type"), None),
    ("epochs-fraction", [*TRAIN[:-1], "epochs=1.5"], ("epochs=1.5", "wrong type"), None),
    ("lr-text", [*TRAIN, "lr=fast"], ("lr='fast'", "wrong type", "float"), None),
    ("quant-lr-negative", [*TRAIN, "quant=qlr", "bits=4", "quant_lr=-1e-4"], ("quant_lr=-0.0001", ">= 0"), None),
    ("seed-text", [*TRAIN, "seed=first"], ("seed='first'", "wrong type"), None),
    ("dropout-negative", [*TRAIN, "dropout=-0.1"], ("dropout=-0.1", "in 0..1"), None),
    ("gat-heads-0", ["train", "dataset=csbm", "model=gat", "heads=0"], ("heads=0", ">= 1"), None),
    ("gat-attn-dropout", ["train", "dataset=csbm", "model=gat", "attn_dropout=2"], ("attn_dropout=2", "in 0..1"), None),
    ("mlp-layers-0", ["train", "dataset=csbm", "model=decoupled", "mlp_layers=0"], ("mlp_layers=0", ">= 1"), None),
    ("dropedge-p-1", [*TRAIN, "transform=dropedge", "p=1"], ("dropedge p=1", "[0, 1)"), None),
    ("truncation-unknown", [*TRAIN, "quant=qlr", "bits=2", "truncation=bt**"], ("bt**",), None),
    ("sparse-features-text", [*TRAIN, "sparse_features=maybe"], ("sparse_features='maybe'", "wrong type", "bool"), None),
    ("no-data-files", ["train", "dataset=cora", "model=gcn", "--data-dir", "empty"], ("'cora'", "ind.cora.x"),
     a_dir("empty")),
    ("broken-plugin-key", ["train", "dataset=csbm", "model=planted-half", "--plugin", "./broken_plug.py"],
     ("unknown model 'planted-half'", "--plugin ./broken_plug.py", "torch_scatter"), broken_plugin),
    # -- usage ---------------------------------------------------------------------------------
    ("unknown-command", ["trian"], ("invalid choice: 'trian'", "train"), None),
    ("unknown-option", [*RUN, "--wokers", "2"], ("--wokers",), a_file("ok.yaml", GOOD)),
    ("workers-text", [*RUN, "--workers", "two"], ("--workers", "'two'"), a_file("ok.yaml", GOOD)),
    ("timeout-text", [*RUN, "--timeout", "soon"], ("--timeout", "'soon'"), a_file("ok.yaml", GOOD)),
    ("run-no-matrix", ["run"], ("required: matrix",), None),
    ("list-unknown-kind", ["list", "modles"], ("unknown plugin kind 'modles'", "models"), None),
    # -- run: matrix files ---------------------------------------------------------------------
    ("matrix-unknown-name", ["run", "smoek", "--results", "res"], ("unknown matrix 'smoek'", "smoke"), None),
    ("matrix-missing-file", ["run", "nowhere.yaml", "--results", "res"], ("'nowhere.yaml'", "not found"), None),
    ("matrix-dangling-symlink", ["run", "gone.yaml", "--results", "res"], ("gone.yaml", "not found"),
     a_bad_symlink("gone.yaml")),
    ("matrix-is-a-folder", ["run", "adir.yaml", "--results", "res"], ("adir.yaml",), a_dir("adir.yaml")),
    ("matrix-bad-yaml", ["run", "m.yaml", "--results", "res"], ("m.yaml",), matrix("name: m\nfixed: {model: gcn\n")),
    ("matrix-empty", ["run", "m.yaml", "--results", "res"], ("m.yaml",), matrix("")),
    ("matrix-a-list", ["run", "m.yaml", "--results", "res"], ("m.yaml",), matrix("- name: m\n")),
    ("matrix-fixed-a-list", ["run", "m.yaml", "--results", "res"], ("m.yaml", "fixed"),
     matrix(GOOD.replace("fixed: {", "fixed: [").replace("epochs: 2}", "epochs: 2]"))),
    ("matrix-exclude-unknown-key", ["run", "m.yaml", "--results", "res"], ("m.yaml", "'modle'"),
     matrix(GOOD + "axes: {depth: [2, 4]}\nexclude: [{modle: gcn}]\n")),
    ("matrix-unknown-section", ["run", "m.yaml", "--results", "res"], ("m.yaml", "'axis'", "axes"),
     matrix(GOOD + "axis: {depth: [2, 4]}\n")),
    ("matrix-typo-key", ["run", "m.yaml", "--results", "res"], ("m.yaml", "'epoch'", "epochs"),
     matrix(GOOD.replace("epochs: 2", "epoch: 2"))),
    ("matrix-seeds-text", ["run", "m.yaml", "--results", "res"], ("m.yaml", "seeds"),
     matrix(GOOD.replace("seeds: [0]", "seeds: many"))),
    ("matrix-bad-value", ["run", "m.yaml", "--results", "res"], ("m.yaml", "hidden=0"),
     matrix(GOOD + "axes: {hidden: [16, 0]}\n")),
    ("matrix-broken-plugin", ["run", "m.yaml", "--results", "res", "--plugin", "broken_plug"],
     ("unknown model 'planted-half'", "--plugin broken_plug", "torch_scatter"),
     setups(broken_plugin, matrix(GOOD.replace("model: gcn", "model: planted-half")))),
    # -- run: options --------------------------------------------------------------------------
    ("override-unknown-key", [*RUN, "depht=4"], ("'depht'", "depth"), a_file("ok.yaml", GOOD)),
    ("only-unknown-key", [*RUN, "--only", "modle=gcn"], ("modle",), a_file("ok.yaml", GOOD)),
    ("only-unknown-value", [*RUN, "--only", "model=gat"], ("gat",), a_file("ok.yaml", GOOD)),
    ("only-not-key-value", [*RUN, "--only", "gcn"], ("'gcn'",), a_file("ok.yaml", GOOD)),
    ("retries-negative", [*RUN, "--retries", "-1"], ("--retries -1", ">= 0"), a_file("ok.yaml", GOOD)),
    ("unknown-executor", [*RUN, "--executor", "kubernetes"], ("unknown executor 'kubernetes'", "dask, local, slurm"),
     a_file("ok.yaml", GOOD)),
    ("dask-option-on-local", [*RUN, "--scheduler", "tcp://h:8786"], ("--scheduler", "executor 'local'"),
     a_file("ok.yaml", GOOD)),
    ("reuse-a-file", [*RUN, "--reuse", "afile"], ("--reuse", "afile"),
     setups(a_file("ok.yaml", GOOD), a_file("afile", "x"))),
    # -- run: executors ------------------------------------------------------------------------
    ("slurm-absent", [*RUN, "--executor", "slurm"], ("--executor slurm", "sbatch", "--slurm-cluster local"),
     setups(a_file("ok.yaml", GOOD), no_slurm)),
    ("slurm-cluster-slurm-absent", [*RUN, "--executor", "slurm", "--slurm-cluster", "slurm"],
     ("--slurm-cluster slurm", "srun"), setups(a_file("ok.yaml", GOOD), no_slurm)),
    ("slurm-cluster-unknown", [*RUN, "--executor", "slurm", "--slurm-cluster", "lokal"], ("'lokal'", "local"),
     a_file("ok.yaml", GOOD)),
    ("slurm-cpus-0", [*RUN, "--executor", "slurm", "--slurm-cluster", "local", "--cpus-per-task", "0"],
     ("--cpus-per-task=0", ">= 1"), a_file("ok.yaml", GOOD)),
    ("slurm-time-0", [*RUN, "--executor", "slurm", "--slurm-cluster", "local", "--time-min", "0"],
     ("--time-min=0", ">= 1"), a_file("ok.yaml", GOOD)),
    ("dask-bad-address", [*RUN, "--executor", "dask", "--scheduler", "tcp:/host"], ("'tcp:/host'", "cannot connect"),
     a_file("ok.yaml", GOOD)),
    ("dask-wait-negative", [*RUN, "--executor", "dask", "--scheduler", "tcp://h:1", "--dask-wait", "-1"],
     ("--dask-wait=-1", ">= 0"), a_file("ok.yaml", GOOD)),
    ("dask-connect-timeout-0", [*RUN, "--executor", "dask", "--scheduler", "tcp://h:1", "--dask-connect-timeout", "0"],
     ("--dask-connect-timeout=0", ">= 0.1"), a_file("ok.yaml", GOOD)),
    # -- status, report, export, speed, throughput ---------------------------------------------
    ("status-unknown-matrix", ["status", "smoek"], ("unknown matrix 'smoek'",), None),
    ("status-matrix-name-path", ["status", "m.yaml"], ("'../escape'",),
     matrix(GOOD.replace("name: ok", "name: ../escape"))),
    ("status-only-unknown-key", ["status", "ok.yaml", "--only", "modle=gcn"], ("modle",), a_file("ok.yaml", GOOD)),
    ("status-estimate-text", ["status", "ok.yaml", "--estimate", "many"], ("--estimate", "'many'"),
     a_file("ok.yaml", GOOD)),
    ("status-list-unknown", ["status", "ok.yaml", "--list", "done"], ("--list", "'done'"), a_file("ok.yaml", GOOD)),
    ("export-missing-dir", ["export", "nowhere", "--csv", "x.csv"], ("nowhere",), None),
    ("throughput-model-no-depth", ["throughput", "--models", "gcnii"], ("'gcnii'", "NAME-DEPTH"), None),
    ("throughput-unknown-quant", ["throughput", "--quants", "qlr4"], ("'qlr4'", "fp32 or NAME-BITS"), None),
    ("throughput-unknown-ref", ["throughput", "--against", "no-such-release"], ("'no-such-release'",), None),
    ("throughput-epochs-1", ["throughput", "--epochs", "1"], ("--epochs", ">= 2"), None),
    ("throughput-warmup-negative", ["throughput", "--warmup", "-1"], ("--warmup", ">= 0", "-1"), None),
]

#: cases of the same kind (a bad value or fault: exit 2, one line, nothing written) in other modules
ELSEWHERE: Dict[str, int] = {
    "tests/test_bad_input.py": 18,           # train and run: values out of range, a key given twice, a
                                             # bad --timeout/--workers/--threads, a truncated dataset file
    "tests/test_data.py": 8,                 # train: unknown dataset, model, key, split; bad depths; garbage file
    "tests/test_matrix.py": 7,               # matrix names that are paths
    "tests/test_runner.py": 5,               # matrix typo, --partition on local, no dataset files, bad --reuse x2
    "tests/test_store.py": 2,                # --results naming a file, a read-only store
    "tests/test_engine_convert.py": 3,       # speed: unknown key, unknown graph, training on a generated graph
    "tests/test_speed_runs.py": 6,           # speed: unknown key, bad value, out of range, a model the engine
                                             # does not convert, a key given twice; a speed matrix's bad impls
    "tests/test_report.py": 1,               # report of a missing folder
    "tests/test_train.py": 1,                # train: a typo key in a subprocess
    "tests/test_registry.py": 2,             # run: a typo key after options; a key of a broken entry point
    "tests/test_restricted_unpickle.py": 1,  # train on a poisoned pickle
    "tests/test_executors.py": 2,            # unreachable dask scheduler, scheduler without workers
}


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BENCH_SUITE_CACHE", str(tmp_path / ".cache"))
    monkeypatch.setenv("PATH", os.environ.get("PATH", ""))  # a setup may narrow it
    monkeypatch.delenv("BENCH_SUITE_TRACEBACK", raising=False)
    monkeypatch.setattr(R, "_failed", {})  # a broken plugin of one case is not another case's
    monkeypatch.setattr(R, "_reported", set())
    D.clear_memory_cache()

    def run(argv: List[str]):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
        out = capsys.readouterr()
        return code, out.out, out.err

    yield run
    for key in [k for k in R.MODELS.keys() if k.startswith("planted-")]:
        R.MODELS.unregister(key)
    D.clear_memory_cache()


def tree(root: Path) -> set:
    return {str(p.relative_to(root)) for p in root.rglob("*") if ".cache" not in p.parts}


@pytest.mark.parametrize("argv,needles,setup", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_written(cli, tmp_path, argv, needles, setup):
    if setup is not None:
        setup(tmp_path)
    before = tree(tmp_path)
    code, out, err = cli(list(argv))
    assert code == 2, err
    assert err.count("\n") == 1 and err.endswith("\n") and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
    assert out == ""
    assert tree(tmp_path) == before  # no results folder, no .slurm folder, no record, no temporary file


def test_the_catalogue_has_at_least_80_cases():
    """The README states the count: at least 80 cases."""
    total = len(CASES) + sum(ELSEWHERE.values())
    assert len({c[0] for c in CASES}) == len(CASES)
    assert total >= 80
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"{total} cases" in readme, total
