"""End-to-end tests of ``bench-suite run``: resume after kill -9, failures, timeouts, executors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

PLANTED = textwrap.dedent('''
    """Plugins planted by tests/test_runner.py: models that fail, diverge or hang."""
    import time

    import torch

    from bench_suite.registry import MODELS


    class _Linear(torch.nn.Module):
        def __init__(self, in_dim, num_classes, depth, quant, hidden: int = 8):
            super().__init__()
            self.lin = torch.nn.Linear(in_dim, num_classes)

        def hidden_out(self, x):
            return self.lin(x)


    @MODELS.register("planted-boom")
    class Boom(_Linear):
        """Raises in forward."""

        def forward(self, g, x, return_hidden=False):
            raise RuntimeError("planted failure in forward")


    @MODELS.register("planted-nan")
    class NaNModel(_Linear):
        """Produces NaN logits."""

        def forward(self, g, x, return_hidden=False):
            return self.lin(x) * float("nan")


    @MODELS.register("planted-sleepy")
    class Sleepy(_Linear):
        """Sleeps ``delay`` seconds per forward: exceeds any short timeout."""

        def __init__(self, in_dim, num_classes, depth, quant, delay: float = 10.0):
            super().__init__(in_dim, num_classes, depth, quant)
            self.delay = delay

        def forward(self, g, x, return_hidden=False):
            time.sleep(self.delay)
            return self.lin(x)
''')

#: subprocesses import this checkout's bench_suite, whatever their working directory (an editable
#: install may point at another checkout)
ENV = dict(os.environ, OMP_NUM_THREADS="1",
           PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                    os.environ.get("PYTHONPATH")])))


def bench(*args: str, cwd: Path, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "bench_suite.cli", *args], cwd=cwd, env=ENV, capture_output=True,
                         text=True, timeout=timeout)
    if check:
        assert out.returncode in (0, 1), f"exit {out.returncode}\n{out.stderr}"
    return out


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def records(root: Path) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in sorted(root.glob("*.json"))}


#: 8 small csbm runs, slow enough to interrupt after the first records
# 200 epochs: with 25, a quiet machine finished all 8 runs (3.3 s) before the test's signal arrived
EIGHT_RUNS = """
    name: {name}
    seeds: [0, 1, 2, 3]
    fixed: {{dataset: csbm, dataset.nodes: 400, epochs: 200, patience: 1000}}
    axes: {{model: gcn, depth: [2, 3]}}
"""


def start_matrix(tmp_path: Path, name: str, *extra: str, **popen) -> tuple:
    """Write the 8-run matrix ``name``, start ``bench-suite run`` on it (1 worker, 1 thread) and return
    ``(process, store, command)`` once at least 2 records are written."""
    write(tmp_path / f"{name}.yaml", EIGHT_RUNS.format(name=name))
    store = tmp_path / "res" / name
    cmd = [sys.executable, "-m", "bench_suite.cli", "run", f"{name}.yaml", "--results", "res", "--workers", "1",
           "--threads", "1", *extra]
    # SIGINT back to its default in the child: a test run started in the background by a non-interactive
    # shell inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler at all
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **popen)
    deadline = time.time() + 240
    while len(list(store.glob("*.json"))) < 2:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "no records after 240 s"
        time.sleep(0.05)
    return proc, store, cmd


def test_kill_9_mid_matrix_then_resume_repeats_and_loses_nothing(tmp_path):
    proc, store, cmd = start_matrix(tmp_path, "k", "--no-progress")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)  # the pool worker dies with its parent (PR_SET_PDEATHSIG)
    before = records(store)
    assert 2 <= len(before) < 8, len(before)
    assert all(r["status"] == "ok" for r in before.values())
    mtimes = {p.stem: p.stat().st_mtime_ns for p in store.glob("*.json")}

    out = bench(*cmd[3:], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"{len(before)} of 8 runs already finished" in out.stderr
    after = records(store)
    assert len(after) == 8 and all(r["status"] == "ok" for r in after.values())
    for run_id, rec in before.items():  # not repeated: same file, same timestamps
        assert after[run_id]["started"] == rec["started"] and after[run_id]["session"] == rec["session"]
        assert (store / f"{run_id}.json").stat().st_mtime_ns == mtimes[run_id]
    assert len({r["session"] for r in after.values()}) == 2
    assert not list((store / ".claims").iterdir())  # the killed run's claim was taken over, then released
    status = bench("status", "k.yaml", "--results", "res", "--json", cwd=tmp_path)
    assert json.loads(status.stdout) == {"total": 8, "done": 8, "failed": 0, "timeout": 0, "pending": 0,
                                         "corrupt": 0, "running": 0}


def test_failing_nan_and_hanging_plugins_become_records_and_the_matrix_goes_on(tmp_path):
    (tmp_path / "planted_models.py").write_text(PLANTED)
    write(tmp_path / "f.yaml", """
        name: f
        seeds: [0]
        fixed: {dataset: csbm, dataset.nodes: 200, epochs: 5}
        axes:
          arch: [{model: gcn, depth: [2, 3]}, {model: [planted-boom, planted-nan, planted-sleepy]}]
    """)
    args = ["run", "f.yaml", "--results", "res", "--plugin", "planted_models", "--workers", "2",
            "--timeout", "20", "--no-progress"]
    t0 = time.time()
    out = bench(*args, cwd=tmp_path)
    assert out.returncode == 1, out.stderr  # some runs did not succeed
    assert time.time() - t0 < 120
    by_model = {r["spec"]["model"]["name"] + str(r["spec"]["model"]["depth"]): r
                for r in records(tmp_path / "res" / "f").values()}
    assert len(by_model) == 5
    assert by_model["gcn2"]["status"] == by_model["gcn3"]["status"] == "ok"
    boom = by_model["planted-boom2"]
    assert boom["status"] == "failed" and "planted failure in forward" in boom["error"]["traceback"]
    assert "Traceback" in boom["error"]["traceback"] and boom["error"]["type"] == "RuntimeError"
    nan = by_model["planted-nan2"]
    assert nan["status"] == "failed" and nan["error"]["type"] == "NonFiniteLoss"
    sleepy = by_model["planted-sleepy2"]
    assert sleepy["status"] == "timeout" and 19.9 < sleepy["timings"]["total_s"] < 35
    for rec in by_model.values():
        assert rec["env"]["versions"]["torch"].startswith("2.2") and rec["started"] <= rec["finished"]

    status = bench("status", "f.yaml", "--results", "res", "--plugin", "planted_models", "--json", cwd=tmp_path)
    assert json.loads(status.stdout) == {"total": 5, "done": 2, "failed": 2, "timeout": 1, "pending": 0,
                                         "corrupt": 0, "running": 0}
    # a plain re-run repeats nothing; --retry-failed repeats exactly the three that did not succeed
    again = bench(*args, cwd=tmp_path)
    assert "5 of 5 runs already finished" in again.stderr
    assert {k: r["started"] for k, r in records(tmp_path / "res" / "f").items()} == \
        {r["run_id"]: r["started"] for r in by_model.values()}
    retry = bench(*args[:-1], "--retry-failed", "--no-progress", cwd=tmp_path)
    assert "2 of 5 runs already finished" in retry.stderr
    changed = {r["spec"]["model"]["name"] for k, r in records(tmp_path / "res" / "f").items()
               if r["started"] != by_model[r["spec"]["model"]["name"] + str(r["spec"]["model"]["depth"])]["started"]}
    assert changed == {"planted-boom", "planted-nan", "planted-sleepy"}


def test_typos_in_a_matrix_are_rejected_before_any_run(tmp_path):
    write(tmp_path / "typo.yaml", """
        name: typo
        seeds: [0]
        fixed: {dataset: csbm, epochs: 2}
        axes: {model: [gcn, gcnn]}
    """)
    out = bench("run", "typo.yaml", "--results", "res", cwd=tmp_path, check=False)
    assert out.returncode == 2
    assert "typo.yaml" in out.stderr and "'gcnn'" in out.stderr and "gcn" in out.stderr and "decoupled" in out.stderr
    assert not (tmp_path / "res").exists()


@pytest.mark.slow
def test_dask_executor_runs_a_matrix_on_a_local_cluster(tmp_path):
    write(tmp_path / "d.yaml", """
        name: d
        seeds: [0, 1]
        fixed: {dataset: csbm, dataset.nodes: 200, epochs: 3}
        axes: {arch: [{model: gcn, depth: 2}, {model: decoupled, propagation: appnp, depth: 4}]}
    """)
    out = bench("run", "d.yaml", "--results", "res", "--executor", "dask", "--workers", "2", "--no-progress",
                cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    recs = records(tmp_path / "res" / "d")
    assert len(recs) == 4 and all(r["status"] == "ok" for r in recs.values())
    assert len({r["pid"] for r in recs.values()}) >= 1 and all(r["env"]["torch_threads"] >= 1 for r in recs.values())
    again = bench("run", "d.yaml", "--results", "res", "--executor", "dask", "--workers", "2", cwd=tmp_path)
    assert "4 of 4 runs already finished" in again.stderr


@pytest.mark.slow
def test_slurm_executor_runs_a_matrix_through_submitit_local(tmp_path):
    write(tmp_path / "s.yaml", """
        name: s
        seeds: [0, 1]
        fixed: {dataset: csbm, dataset.nodes: 200, epochs: 3, model: gcn, depth: 2}
    """)
    out = bench("run", "s.yaml", "--results", "res", "--executor", "slurm", "--slurm-cluster", "local",
                "--workers", "2", "--time-min", "5", "--no-progress", cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    recs = records(tmp_path / "res" / "s")
    assert len(recs) == 2 and all(r["status"] == "ok" for r in recs.values())
    assert (tmp_path / "res" / ".slurm" / "s").is_dir()  # submitit's job folder
    bad = bench("run", "s.yaml", "--results", "res", "--executor", "local", "--partition", "gpu", cwd=tmp_path,
                check=False)
    assert bad.returncode == 2 and "--partition" in bad.stderr and "workers" in bad.stderr


def test_missing_dataset_files_stop_the_matrix_before_any_run(tmp_path, capsys):
    """A matrix needing Cora, pointed at an empty data directory: exit 2 naming the files, no record."""
    from bench_suite.cli import main

    write(tmp_path / "m.yaml", """
        name: m
        seeds: [0]
        fixed: {epochs: 2}
        axes: {dataset: [csbm, cora], model: gcn}
    """)
    (tmp_path / "empty").mkdir()
    res = tmp_path / "res"
    rc = main(["run", str(tmp_path / "m.yaml"), "--results", str(res), "--data-dir", str(tmp_path / "empty"),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "'cora'" in err and "cora/ind.cora.x" in err and str(tmp_path / "empty") in err
    assert not list(res.glob("m/*.json"))  # not even the csbm run started


def test_ctrl_c_stops_cleanly_keeps_records_and_shows_progress(tmp_path):
    """SIGINT to the runner's process group (what Ctrl-C in a terminal sends): exit 130, every
    finished record kept and valid, no temporary files left; the same command then resumes.
    The progress bar (on, as by default) reports done / failed / left."""
    proc, store, cmd = start_matrix(tmp_path, "c", start_new_session=True)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    err = err.decode()
    assert proc.returncode == 130, err
    assert "interrupted: finished records are kept" in err
    assert "done=" in err and "failed=0" in err and "left=" in err and "run/s" in err
    before = records(store)
    assert 2 <= len(before) < 8 and all(r["status"] == "ok" for r in before.values())
    # no temp file left behind (.claims holds at most the interrupted run's claim)
    assert not [p for p in store.iterdir() if not p.name.endswith(".json") and p.name != ".claims"]
    out = bench(*cmd[3:], "--no-progress", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"{len(before)} of 8 runs already finished" in out.stderr
    assert len(records(store)) == 8
    assert not list((store / ".claims").iterdir())


def test_status_estimate_from_finished_runs() -> None:
    from bench_suite.registry import load_all
    from bench_suite.runner.estimate import estimate
    from bench_suite.spec import resolve_spec

    load_all()

    def spec(**kw):
        return resolve_spec({"dataset": "cora", "model": "gcn", "depth": 4, "seed": 0, **kw})

    def rec(s, seconds, status="ok"):
        return {"spec": s.data, "status": status, "timings": {"total_s": seconds}}

    finished = [rec(spec(seed=0), 10.0), rec(spec(seed=1), 30.0), rec(spec(seed=2), 20.0),  # group median 20
                rec(spec(quant="qat", bits=4), 50.0),          # same depth, other quantizer
                rec(spec(depth=16, seed=0), 80.0),
                rec(spec(seed=3), 1e6, status="failed"),      # failed runs do not count
                rec(spec(model="sgc", depth=2), 5.0),
                rec(spec(model="gcnii", hidden=64), 30.0),
                rec(spec(dataset="citeseer"), 40.0),          # citeseer/cora over shared (gcn, 4): 40 / 25
                rec(spec(dataset="citeseer", depth=16), 96.0)]  # and (gcn, 16): 96 / 80; median ratio 1.4
    pending = [spec(seed=5),                                   # same group: 20
               spec(quant="dq", bits=8, seed=0),               # same arch and depth: median(10, 30, 20, 50) = 25
               spec(depth=32, seed=0),                         # nearest depth 16, scaled x2: 160
               spec(depth=8, seed=0),                          # between 4 (25) and 16 (80): 25 + 55 / 3
               spec(depth=2, seed=0),                          # below 4: 25 / 2
               spec(dataset="citeseer", model="sgc", depth=4),  # cora's sgc at 2, x2 depth, x1.4 dataset: 14
               spec(dataset="citeseer", model="gcnii", hidden=256),  # cora's gcnii at its own hidden: 30 x 1.4
               spec(model="jknet", seed=0)]                    # nothing comparable
    est = estimate(pending, finished)
    assert est.seconds == pytest.approx(20 + 25 + 160 + (25 + 55 / 3) + 12.5 + 14 + 42)
    assert est.estimated == 7 and est.by_level == {"group": 1, "cost": 0, "cost-scaled": 0, "depth": 1, "scaled": 3,
                                                   "proxy": 0, "dataset": 2, "dense": 0}
    assert est.unknown == [pending[-1].label()]
    assert "2 scaled from another dataset" in est.summary(2)
    assert "1 pending runs not estimated" in est.summary(2) and "with 2 workers" in est.summary(2)


def test_status_into_a_closed_pipe_stops_quietly(tmp_path) -> None:
    """`bench-suite status depth --list pending | head -1`: the reader closes the pipe after one line
    (1,440 lines do not fit a pipe buffer); the command exits 141 without a traceback."""
    p = subprocess.Popen([sys.executable, "-m", "bench_suite.cli", "status", "depth", "--list", "pending",
                          "--results", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = p.stdout.readline()
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141, err
    assert first.startswith(b"depth (") and "Traceback" not in err and "BrokenPipe" not in err, err


def test_reuse_copies_ok_records_of_the_same_spec_from_another_matrix(tmp_path, capsys):
    """``--reuse res/a``: matrix b takes a's finished run of the same spec (same run id, same stored spec)
    instead of training it, with its metrics, timings and a note of where it came from; a record whose
    stored spec differs, or a missing directory, is not taken."""
    from bench_suite.cli import main

    fixed = "fixed: {dataset: csbm, dataset.nodes: 200, epochs: 3, model: gcn, depth: 2}"
    write(tmp_path / "a.yaml", f"name: a\nseeds: [0, 1]\n{fixed}\n")
    write(tmp_path / "b.yaml", f"name: b\nseeds: [0, 1, 2]\n{fixed}\n")
    res = tmp_path / "res"
    common = ["--results", str(res), "--workers", "1", "--threads", "1", "--no-progress"]
    assert main(["run", str(tmp_path / "a.yaml"), *common]) == 0
    a = {r["spec"]["train"]["seed"]: r for r in records(res / "a").values()}
    # a's seed-1 file now claims another spec under the same name: it must not be taken for b's seed 1
    tampered = dict(a[1], spec={**a[1]["spec"], "train": {**a[1]["spec"]["train"], "epochs": 4}})
    (res / "a" / f"{a[1]['run_id']}.json").write_text(json.dumps(tampered))
    capsys.readouterr()

    assert main(["run", str(tmp_path / "b.yaml"), *common, "--reuse", str(res / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "--reuse" in err and str(res / "nowhere") in err and not (res / "b").exists()
    assert main(["run", str(tmp_path / "b.yaml"), *common, "--reuse", str(res / "b")]) == 2
    assert "own results directory" in capsys.readouterr().err

    assert main(["run", str(tmp_path / "b.yaml"), "--results", str(res), "--reuse", str(res / "a"), "--dry-run"]) == 0
    out = capsys.readouterr()
    assert f"{a[0]['run_id']}  reusable" in out.out and "(1 of them reusable); 2 would run" in out.err
    assert not (res / "b").exists()

    assert main(["run", str(tmp_path / "b.yaml"), *common, "--reuse", str(res / "a")]) == 0
    assert "reused 1 finished records" in capsys.readouterr().err
    b = {r["spec"]["train"]["seed"]: r for r in records(res / "b").values()}
    assert sorted(b) == [0, 1, 2] and all(r["status"] == "ok" for r in b.values())
    assert b[0]["run_id"] == a[0]["run_id"] and b[0]["matrix"] == "b"
    for key in ("metrics", "timings", "started", "finished", "session", "env", "spec"):
        assert b[0][key] == a[0][key], key
    assert b[0]["reused"]["from"] == str(res / "a" / f"{a[0]['run_id']}.json") and b[0]["reused"]["matrix"] == "a"
    assert "reused" not in b[1] and "reused" not in b[2]
    assert b[1]["session"] != a[1]["session"] and b[1]["session"] == b[2]["session"]  # trained now, by b
    accuracy = {k: v for k, v in a[1]["metrics"].items() if "acc" in k}
    assert accuracy and accuracy == {k: b[1]["metrics"][k] for k in accuracy}  # same spec and seed: same numbers


def test_two_runners_on_one_store_share_the_matrix_and_run_nothing_twice(tmp_path):
    """Two ``bench-suite run`` of the same 8-run matrix started together (two terminals, or two cluster
    jobs on one file system): each run is trained by exactly one of them (their ok counts add up to 8,
    where without claims both would train all 8), every record is whole, no claim is left behind."""
    write(tmp_path / "two.yaml", EIGHT_RUNS.format(name="two"))
    cmd = [sys.executable, "-m", "bench_suite.cli", "run", "two.yaml", "--results", "res", "--workers", "1",
           "--threads", "1", "--no-progress"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    ran = []
    for err in errs:
        last = [line for line in err.splitlines() if line.startswith("finished in")][-1]
        ran.append(int(last.split(": ")[1].split(" ok")[0]))
    assert sum(ran) == 8, errs
    store = tmp_path / "res" / "two"
    recs = records(store)
    assert len(recs) == 8 and all(r["status"] == "ok" for r in recs.values())
    assert not list((store / ".claims").iterdir())


def test_set_threads_after_numba_started_its_pool_still_compiles():
    """`bench-suite speed --threads N` crashed ("Cannot set NUMBA_NUM_THREADS ... once the threads have
    been launched") when a numba kernel compiled after set_threads had changed the environment variable
    of a process whose numba pool was running."""
    code = textwrap.dedent("""
        import numba, numpy as np
        @numba.njit(parallel=True)
        def first(a):
            s = 0.0
            for i in numba.prange(a.shape[0]):
                s += a[i]
            return s
        first(np.ones(8))  # the pool is running
        from bench_suite.runner.worker import set_threads
        set_threads(1)
        @numba.njit
        def second(a):
            return a.sum()
        print(second(np.ones(3)), numba.get_num_threads())
    """)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["3.0", "1"]
