"""Executors fail loudly: no Slurm, an unreachable or empty dask scheduler are one line and exit 2
before anything is written; a run whose worker dies is re-submitted ``--retries`` times on every
executor, then stored as a failed record, and the lost worker is named on stderr."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench_suite.cli import main

#: subprocesses import this checkout's bench_suite, whatever their working directory
ENV = dict(os.environ, OMP_NUM_THREADS="1",
           PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                    os.environ.get("PYTHONPATH")])))
MATRIX = "name: ex\nseeds: [0]\nfixed: {dataset: csbm, dataset.nodes: 200, model: gcn, depth: 2, epochs: 2}\n"

#: a model whose forward kills its own worker process, after noting the pid in ``marker``
KILLER = textwrap.dedent('''
    import os
    import signal

    import torch

    from bench_suite.registry import MODELS


    @MODELS.register("planted-killer")
    class Killer(torch.nn.Module):
        """Kills the process that runs it."""

        def __init__(self, in_dim, num_classes, depth, quant, marker: str = ""):
            super().__init__()
            self.lin = torch.nn.Linear(in_dim, num_classes)
            self.marker = marker

        def forward(self, g, x, return_hidden=False):
            with open(self.marker, "a") as fh:
                fh.write(f"{os.getpid()}\\n")
            os.kill(os.getpid(), signal.SIGKILL)
''')


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BENCH_SUITE_TRACEBACK", raising=False)
    (tmp_path / "ex.yaml").write_text(MATRIX)

    def run(*argv: str):
        code = main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def one_line_refusal(result, *needles: str) -> None:
    code, out, err = result
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)


def test_slurm_without_slurm_is_refused_before_anything_is_written(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # no sbatch, no srun
    one_line_refusal(cli("run", "ex.yaml", "--results", "res", "--executor", "slurm"),
                     "--executor slurm", "sbatch and srun not on PATH", "--slurm-cluster local")
    one_line_refusal(cli("run", "ex.yaml", "--results", "res", "--executor", "slurm", "--slurm-cluster", "slurm"),
                     "--slurm-cluster slurm", "not on PATH")
    one_line_refusal(cli("run", "ex.yaml", "--results", "res", "--executor", "slurm", "--slurm-cluster", "lokal"),
                     "'lokal'", "slurm, local, debug")
    assert not (tmp_path / "res").exists()  # no .slurm folder either


def test_slurm_is_accepted_when_sbatch_and_srun_are_on_path(cli, tmp_path, monkeypatch):
    """The refusal looks at PATH, not at the host: fake sbatch/srun make the executor build (dry run only)."""
    from bench_suite.registry import EXECUTORS, load_all

    load_all()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("sbatch", "srun"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert EXECUTORS.create("slurm").cluster is None
    (bin_dir / "srun").unlink()
    with pytest.raises(Exception, match="srun not on PATH"):
        EXECUTORS.create("slurm")


def test_dask_unreachable_scheduler_is_one_line_within_the_connect_timeout(cli, tmp_path):
    t0 = time.monotonic()
    one_line_refusal(cli("run", "ex.yaml", "--results", "res", "--executor", "dask", "--scheduler",
                         "tcp://127.0.0.1:9", "--dask-connect-timeout", "1"),
                     "'tcp://127.0.0.1:9'", "cannot connect", "within 1 s")
    assert time.monotonic() - t0 < 20
    assert not (tmp_path / "res").exists()


def test_dask_scheduler_without_workers_gives_up_after_dask_wait(cli, tmp_path):
    import logging

    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=0, processes=False, dashboard_address=":0", silence_logs=logging.CRITICAL)
    try:
        t0 = time.monotonic()
        one_line_refusal(cli("run", "ex.yaml", "--results", "res", "--executor", "dask", "--scheduler",
                             cluster.scheduler_address, "--dask-wait", "1.5", "--no-progress"),
                         cluster.scheduler_address, "no dask worker joined within 1.5 s", "--dask-wait")
        assert time.monotonic() - t0 < 30
    finally:
        cluster.close()
    assert not (tmp_path / "res").exists()


def run_killer(tmp_path: Path, *extra: str) -> tuple:
    """Run the one-run matrix of the planted killer model; ``(process, record, pids that ran it)``."""
    (tmp_path / "killer.py").write_text(KILLER)
    marker = tmp_path / "marker"
    (tmp_path / "k.yaml").write_text(
        f"name: k\nseeds: [0]\nfixed: {{dataset: csbm, dataset.nodes: 100, model: planted-killer, "
        f"marker: '{marker}', epochs: 2}}\n")
    out = subprocess.run([sys.executable, "-m", "bench_suite.cli", "run", "k.yaml", "--results", "res",
                          "--plugin", "killer", "--no-progress", "--workers", "1", *extra],
                         cwd=tmp_path, env=ENV, capture_output=True, text=True,
                         timeout=240)
    recs = [json.loads(p.read_text()) for p in (tmp_path / "res" / "k").glob("*.json")]
    assert len(recs) == 1, out.stderr
    pids = marker.read_text().split() if marker.exists() else []
    return out, recs[0], pids


@pytest.mark.parametrize("executor,retries", [("local", "1"), ("local", "0")])
def test_a_killed_local_worker_is_retried_then_recorded_as_failed(tmp_path, executor, retries):
    out, rec, pids = run_killer(tmp_path, "--executor", executor, "--retries", retries)
    assert out.returncode == 1, out.stderr
    assert len(pids) == 1 + int(retries) and len(set(pids)) == len(pids)  # a fresh process each time
    assert rec["status"] == "failed" and rec["error"]["type"] == "WorkerLost"
    assert f"local worker process {pids[-1]} died while running it" in rec["error"]["message"]
    assert f"no retry left (--retries {retries}), stored as failed" in out.stderr
    assert ("re-submitting it (retry 1 of 1)" in out.stderr) == (retries == "1")
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_a_lost_dask_worker_is_named_retried_and_recorded(tmp_path):
    out, rec, pids = run_killer(tmp_path, "--executor", "dask", "--retries", "1")
    assert out.returncode == 1, out.stderr
    assert len(pids) == 2, out.stderr  # the scheduler re-ran nothing by itself: one retry, by the session
    lost = [line for line in out.stderr.splitlines() if line.startswith("lost: csbm/planted-killer")]
    assert len(lost) == 2 and all("dask worker tcp://" in line and "died while running it" in line for line in lost)
    assert "re-submitting it (retry 1 of 1)" in lost[0] and "no retry left" in lost[1]
    assert rec["status"] == "failed" and "dask worker tcp://" in rec["error"]["message"]


@pytest.mark.slow
def test_a_killed_slurm_job_is_retried_like_a_dask_task(tmp_path):
    out, rec, pids = run_killer(tmp_path, "--executor", "slurm", "--slurm-cluster", "local", "--retries", "1",
                                "--time-min", "5")
    assert out.returncode == 1, out.stderr
    assert "runs the jobs through submitit's local executor on this machine, not on Slurm" in out.stderr
    assert len(pids) == 2 and "re-submitting it (retry 1 of 1)" in out.stderr
    assert rec["status"] == "failed" and "local job" in rec["error"]["message"]
    assert "ended without a result" in rec["error"]["message"]
