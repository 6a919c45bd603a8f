"""The measuring side of ``bench-suite throughput``: one process per release of the suite.

Run as a script (``python -P throughput_worker.py``) with ``PYTHONPATH`` naming the checkout to
measure, so the same harness drives the current code and a previous release: it imports only what
both have (the registry, tuned defaults, specs, dataset loading, ``train.build_model`` and
``train.fit``).  Requests and replies are JSON lines on stdin and on the original stdout (anything
the libraries print goes to stderr):

- ``{"op": "setup", "key": K, "flat": {...}}``: resolve the flat spec with the tuned defaults (as a
  matrix run does), load its dataset (cached), seed and build the model; reply with the spec.
- ``{"op": "measure", "key": K, "epochs": N, "warmup": W}``: train ``W + N`` epochs in one ``train.fit``
  call (patience ``W + N``, so it does not stop early) and reply with the wall time of its last
  ``N - 1`` epochs, each timed between consecutive progress callbacks: training forward, backward,
  Adam step, the evaluation forward, scoring and the best-state copy, exactly what an epoch of a run
  costs.  The first epoch of a call is left out because it also pays ``fit``'s set-up (graph
  preparation, optimizer), and the ``W`` after it (default 0) because a process whose memory was just
  given back (``malloc_trim`` after every measurement) page-faults its working set in again over its
  first epochs: on Coauthor-Physics, GCNII-16 took 8.0, 4.5, 3.2, 1.8, 1.7 s for its first epochs and
  1.2 s from the sixth on (2026-12-07, one thread), so two timed epochs right after the set-up
  measured twice what a run's epoch costs.
- ``{"op": "drop"}``: forget every set-up configuration and cached dataset (the next dataset's turn).
- ``{"op": "env"}``: :func:`bench_suite.env.environment` and where ``bench_suite`` was imported from.
"""
from __future__ import annotations

import ctypes
import dataclasses
import gc
import json
import os
import sys
import time
import traceback


def _give_back_memory() -> None:
    """``malloc_trim(0)`` (glibc) after each measurement: the releases' processes take turns, and neither
    should hold its last step's peak while the other measures (the kernel OOM-killed a 13.6 GB process
    during Coauthor-CS GCNII-64, both releases' processes and two runner workers sharing 24 GB)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(ctypes.c_size_t(0))
    except (OSError, AttributeError):
        pass


def timed_epochs(stamps: list, warmup: int) -> list:
    """The epoch times a measurement reports from the progress callbacks' ``stamps`` (one after each
    epoch): the intervals between consecutive stamps, less the first ``warmup`` of them (the first
    epoch has no interval: it ends at the first stamp)."""
    return [b - a for a, b in zip(stamps, stamps[1:])][warmup:]


def main() -> int:
    reply_to = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # library output to stderr: stdout carries replies only
    sys.stdout = sys.stderr

    import torch

    torch.set_num_threads(int(os.environ.get("THROUGHPUT_THREADS", "1")))
    import bench_suite
    from bench_suite.defaults import apply_defaults
    from bench_suite.env import environment
    from bench_suite.registry import load_all
    from bench_suite.spec import resolve_spec
    from bench_suite.train import build_model, fit, seed_everything

    load_all()
    datasets: dict = {}
    setups: dict = {}

    def setup(key: str, flat: dict) -> dict:
        from bench_suite.data.datasets import load_dataset

        spec = resolve_spec(apply_defaults(flat), where=f"throughput basket entry {key}")
        d = spec.data
        ds = {k: v for k, v in d["dataset"].items() if k != "name"}
        ds_key = json.dumps(d["dataset"], sort_keys=True)
        if ds_key not in datasets:
            datasets[ds_key] = load_dataset(d["dataset"]["name"], seed=0, **ds)
        data = datasets[ds_key]
        seed_everything(0)
        model = build_model(spec, data)
        setups[key] = (spec, model, data)
        return {"spec": d, "run_id": spec.run_id, "data": data.summary()}

    def measure(key: str, epochs: int, warmup: int = 0) -> dict:
        spec, model, data = setups[key]
        cfg = dataclasses.replace(spec.train, epochs=warmup + epochs, patience=warmup + epochs)
        stamps: list = []
        fit(model, data, cfg, progress=lambda *_: stamps.append(time.perf_counter()))
        return {"epoch_s": timed_epochs(stamps, warmup)}

    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["op"] == "setup":
                out = setup(req["key"], req["flat"])
            elif req["op"] == "measure":
                out = measure(req["key"], int(req["epochs"]), int(req.get("warmup", 0)))
                _give_back_memory()
            elif req["op"] == "drop":  # every set-up configuration and cached dataset
                setups.clear()
                datasets.clear()
                gc.collect()
                _give_back_memory()
                out = {"dropped": True}
            elif req["op"] == "env":
                out = {"env": environment(), "package": os.path.dirname(os.path.abspath(bench_suite.__file__))}
            else:
                out = {"error": f"unknown op {req['op']!r}"}
        except Exception as exc:  # one configuration failing (a NaN loss) must not end the benchmark
            traceback.print_exc(file=sys.stderr)
            out = {"error": f"{type(exc).__name__}: {exc}"}
        reply_to.write(json.dumps(out) + "\n")
        reply_to.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
