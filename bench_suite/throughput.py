"""``bench-suite throughput``: training epochs per second and runs per hour of a fixed basket, for
the current code and a previous release measured in the same run, so the gain is a ratio.

The basket: GCN-2, GCNII-64, APPNP-10 and SMP-64 (``lambda_min=0``: the form that trains at
K = 64; the same work per epoch as SMP as written) × FP32, QLR INT4, QLR INT2 BT*, DQ INT4 × Cora,
CiteSeer, Coauthor-CS and Amazon-Photo (the bag-of-words sets with ``sparse_features: true``, as
the reproduce matrix runs them; ``NAME:dense`` / ``NAME:sparse`` choose), each spec completed by
the tuned defaults exactly as a matrix run is.  Every option narrows or extends it: a model is
``NAME-DEPTH`` (a registered model, or a propagation of ``decoupled``), a quantizer
``fp32`` or ``NAME-BITS[-TRUNCATION]``.

Each release runs in its own process (:mod:`bench_suite.throughput_worker`, the previous one from a
temporary ``git worktree`` of ``--against``), one torch thread each, one process working at a time.
Datasets are measured one after another (a process holds one dataset's models at a time, and gives the
memory back after each measurement) and each one's rows are appended to ``--out`` as it finishes.  Every
configuration is warmed up (lazy initialisation, compilation), then each round trains
``--warmup`` untimed and ``--epochs`` timed epochs of every configuration in both releases in turn (the
untimed ones page the working set in again after the last measurement gave the memory back), the releases' order
alternating between rounds, so machine load falls on both alike.  An epoch is one epoch of
``train.fit``: training step, evaluation forward, scoring.  Reported per configuration and
release: the median epoch time, epochs per second, and runs per hour = 3600 / (epochs per run ×
epoch time), with epochs per run the mean ``epochs_run`` of finished runs of that spec (any store
under ``--results``, this spec version) or else the spec's ``epochs`` (an upper bound: early
stopping ends most runs sooner); dataset loading and the final layer metrics are not included.

Every measurement is one JSON line in ``--out`` (default ``results/cost/throughput.jsonl``) with
the machine and environment of the process that measured it; the current release's lines are the
cost table ``bench-suite status --estimate`` uses (:mod:`bench_suite.runner.estimate`).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

#: the release the ratios are measured against by default: the suite before the throughput work
#: (sparse inputs already in; lean quantized layers and batched seeds not yet)
PREVIOUS_RELEASE = "04552245ce5f6b7c26a4bb7a5b1c85af9fe85e94"
BASKET_DATASETS = ("cora", "citeseer", "coauthor-cs", "amazon-photo")
BASKET_MODELS = ("gcn-2", "gcnii-64", "appnp-10", "smp-64")
BASKET_QUANTS = ("fp32", "qlr-4", "qlr-2-bt*", "dq-4")
FULL = {"datasets": BASKET_DATASETS, "models": BASKET_MODELS, "quants": BASKET_QUANTS, "rounds": 3, "epochs": 5, "warmup": 3}
QUICK = {"datasets": ("cora", "citeseer"), "models": BASKET_MODELS, "quants": ("fp32", "qlr-4"),
         "rounds": 2, "epochs": 4, "warmup": 1}
#: datasets whose features are bag-of-words stored sparse unless the token says ``:dense``
SPARSE_BY_DEFAULT = ("amazon-", "coauthor-")
WORKER = Path(__file__).with_name("throughput_worker.py")


class BasketError(ValueError):
    """A basket token that names nothing; the message says what would be valid."""


def dataset_flat(token: str) -> Dict[str, Any]:
    """``coauthor-cs`` → ``{dataset: coauthor-cs, sparse_features: True}``; ``cora:sparse``, ``NAME:dense``."""
    name, _, form = token.partition(":")
    if form not in ("", "dense", "sparse"):
        raise BasketError(f"dataset {token!r}: the form after ':' is 'dense' or 'sparse', not {form!r}")
    sparse = form == "sparse" or (not form and name.startswith(SPARSE_BY_DEFAULT))
    return {"dataset": name, **({"sparse_features": True} if sparse else {})}


def model_flat(token: str) -> Dict[str, Any]:
    """``gcnii-64`` → ``{model: gcnii, depth: 64}``; ``appnp-10`` → decoupled with propagation appnp."""
    from bench_suite.registry import MODELS, PROPAGATIONS

    name, _, depth = token.rpartition("-")
    if not name or not depth.isdigit():
        raise BasketError(f"model {token!r} is not NAME-DEPTH, e.g. {', '.join(BASKET_MODELS)}")
    if name in PROPAGATIONS:
        flat = {"model": "decoupled", "propagation": name, "depth": int(depth)}
        return dict(flat, lambda_min=0) if name == "smp" else flat
    if name in MODELS:
        return {"model": name, "depth": int(depth)}
    raise BasketError(f"model {token!r}: {name!r} is neither a model ({', '.join(MODELS.keys())}) "
                      f"nor a propagation ({', '.join(PROPAGATIONS.keys())})")


def quant_flat(token: str) -> Dict[str, Any]:
    """``fp32``; ``qlr-4`` → ``{quant: qlr, bits: 4}``; ``qlr-2-bt*`` adds ``truncation: bt*``."""
    from bench_suite.registry import QUANTIZERS

    if token == "fp32":
        return {"quant": "fp32"}
    for name in sorted(QUANTIZERS.keys(), key=len, reverse=True):  # qlr-frozen before qlr
        if token.startswith(name + "-"):
            bits, _, trunc = token[len(name) + 1:].partition("-")
            if bits.isdigit():
                return {"quant": name, "bits": int(bits), **({"truncation": trunc} if trunc else {})}
    raise BasketError(f"quantizer {token!r} is not fp32 or NAME-BITS[-TRUNCATION] with NAME one of "
                      f"{', '.join(QUANTIZERS.keys())}, e.g. {', '.join(BASKET_QUANTS)}")


@dataclass
class Config:
    dataset: str
    model: str
    quant: str

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.model}/{self.quant}"

    def flat(self) -> Dict[str, Any]:
        return {**dataset_flat(self.dataset), **model_flat(self.model), **quant_flat(self.quant)}


class Release:
    """One measuring process (:mod:`bench_suite.throughput_worker`) importing the suite from ``root``."""

    def __init__(self, name: str, root: Path, threads: int, data_dir: Optional[str]) -> None:
        env = dict(os.environ, PYTHONPATH=str(root), THROUGHPUT_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
                   MKL_NUM_THREADS=str(threads))
        if data_dir:
            env["BENCH_SUITE_DATA"] = data_dir
        self.name, self.root = name, root
        self.proc = subprocess.Popen([sys.executable, "-P", str(WORKER)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, text=True, cwd=str(root))
        info = self.ask({"op": "env"})
        if "error" in info or Path(info["package"]).resolve() != (root / "bench_suite").resolve():
            self.close()
            raise RuntimeError(f"the {name} release's process imported bench_suite from "
                               f"{info.get('package', '?')}, not {root / 'bench_suite'}: {info.get('error', '')}")
        self.env: Dict[str, Any] = info["env"]

    def ask(self, request: Dict[str, Any]) -> Dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} release's process ended (exit code {self.proc.wait()}); "
                               f"see its messages above")
        return json.loads(line)

    def close(self, wait: bool = True) -> None:
        """End the process: at the end of its requests (``wait``), or at once (an interrupted benchmark)."""
        if not wait:
            self.proc.kill()
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait()


@dataclass
class Measured:
    spec: Optional[Dict[str, Any]] = None
    data: Optional[Dict[str, Any]] = None
    epoch_s: List[float] = field(default_factory=list)
    error: Optional[str] = None


def resolve_ref(repo: Path, ref: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", f"{ref}^{{commit}}"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise BasketError(f"--against {ref!r} is not a commit of {repo}: {out.stderr.strip()}")
    return out.stdout.strip()


def epochs_per_run(spec: Dict[str, Any], finished: Dict[str, List[int]]) -> Tuple[float, str]:
    """Mean ``epochs_run`` of finished runs of this spec (any seed), else of this spec under any
    quantizer (:func:`bench_suite.runner.estimate.protocol_key`), else its maximum ``epochs``."""
    from bench_suite.runner.estimate import protocol_key
    from bench_suite.spec import RunSpec

    for key, what in ((RunSpec.from_dict(spec).group_key(), "this spec"),
                      (protocol_key(spec), "this spec, any quantizer")):
        runs = finished.get(key)
        if runs:
            return statistics.mean(runs), f"mean of {len(runs)} finished runs of {what}"
    return float(spec["train"]["epochs"]), "spec maximum (early stopping may end runs sooner)"


def by_dataset(configs: Sequence[Config]) -> List[List[Config]]:
    """The configurations grouped by dataset, in their order of first appearance."""
    groups: Dict[str, List[Config]] = {}
    for c in configs:
        groups.setdefault(c.dataset, []).append(c)
    return list(groups.values())


def measure(configs: Sequence[Config], releases: Sequence[Release], rounds: int, epochs: int,
            log=print, warmup: int = 0) -> Dict[Tuple[str, str], Measured]:
    """``(release name, config key) -> Measured``: warm-up, then ``rounds`` interleaved rounds, each
    measurement timing ``epochs - 1`` epochs after ``warmup`` untimed ones.  A release whose process
    ends keeps what it measured; its configurations say why they stopped."""
    out = {(r.name, c.key): Measured() for r in releases for c in configs}
    dead: Dict[str, str] = {}

    def ask(r: Release, c: Config, request: Dict[str, Any]) -> Dict[str, Any]:
        if r.name in dead:
            return {"error": dead[r.name]}
        try:
            return r.ask(dict(request, key=c.key))
        except RuntimeError as exc:
            dead[r.name] = str(exc)
            log(f"{exc}: its remaining measurements are left out")
            return {"error": str(exc)}

    # one dataset at a time: its configurations set up, measured, then dropped, so a process holds one
    # dataset's models and copies (the whole default basket at once outgrew 24 GB with two releases)
    for group in by_dataset(configs):
        for c in group:
            for r in releases:
                m = out[(r.name, c.key)]
                reply = ask(r, c, {"op": "setup", "flat": c.flat()})
                if "error" in reply:
                    m.error = reply["error"]
                    continue
                m.spec, m.data = reply["spec"], reply["data"]
                m.error = ask(r, c, {"op": "measure", "epochs": 1}).get("error")
            log(f"set up {c.key}")
        for i in range(rounds):
            order = list(releases) if i % 2 == 0 else list(reversed(releases))
            for c in group:
                for r in order:
                    m = out[(r.name, c.key)]
                    if m.error:
                        continue
                    reply = ask(r, c, {"op": "measure", "epochs": epochs, "warmup": warmup})
                    m.error = reply.get("error")
                    m.epoch_s += reply.get("epoch_s", [])
                log(f"round {i + 1}/{rounds} {c.key}: " + "  ".join(
                    f"{r.name} {1000 * statistics.median(out[(r.name, c.key)].epoch_s):.1f} ms"
                    if out[(r.name, c.key)].epoch_s else f"{r.name} failed" for r in releases))
        for r in releases:
            ask(r, group[0], {"op": "drop"})
    return out


def rows_of(configs: Sequence[Config], releases: Sequence[Release], measured: Dict[Tuple[str, str], Measured],
            finished: Dict[str, List[int]], meta: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One JSON-able row per (configuration, release)."""
    rows = []
    for c in configs:
        medians = {r.name: statistics.median(measured[(r.name, c.key)].epoch_s)
                   for r in releases if measured[(r.name, c.key)].epoch_s}
        for r in releases:
            m = measured[(r.name, c.key)]
            row: Dict[str, Any] = {"kind": "throughput", "release": r.name, "config": c.key, **meta,
                                   "ref": meta["refs"][r.name], "spec": m.spec, "data": m.data}
            del row["refs"]
            if m.epoch_s:
                t = medians[r.name]
                per_run, source = epochs_per_run(m.spec, finished)
                q1, _, q3 = statistics.quantiles(m.epoch_s, n=4) if len(m.epoch_s) > 1 else (t, t, t)
                row.update(samples=len(m.epoch_s), epoch_s_median=t, epoch_s_q1=q1, epoch_s_q3=q3,
                           epochs_per_s=1 / t, epochs_per_run=per_run, epochs_per_run_from=source,
                           runs_per_hour=3600 / (per_run * t))
                if r.name == "current" and "previous" in medians:
                    row["speedup_vs_previous"] = medians["previous"] / t
            if m.error:
                row["error"] = m.error
            row["env"] = r.env
            rows.append(row)
    return rows


def table(rows: Sequence[Dict[str, Any]]) -> str:
    """The rows as a text table: one line per configuration, both releases side by side."""
    by: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for row in rows:
        by.setdefault(row["config"], {})[row["release"]] = row
    head = (f"{'configuration':34s} {'ms/epoch':>9s} {'epochs/s':>9s} {'prev ms':>9s} {'speed-up':>9s} "
            f"{'epochs/run':>10s} {'runs/h':>8s}")
    lines = [head, "-" * len(head)]
    for key, rel in by.items():
        cur, prev = rel.get("current", {}), rel.get("previous", {})
        if "epoch_s_median" not in cur:
            lines.append(f"{key:34s} failed: {cur.get('error', '?')}")
            continue
        p = f"{1000 * prev['epoch_s_median']:9.1f}" if "epoch_s_median" in prev else f"{'-':>9s}"
        s = f"{cur['speedup_vs_previous']:8.2f}x" if "speedup_vs_previous" in cur else f"{'-':>9s}"
        lines.append(f"{key:34s} {1000 * cur['epoch_s_median']:9.1f} {cur['epochs_per_s']:9.2f} {p} {s} "
                     f"{cur['epochs_per_run']:10.0f} {cur['runs_per_hour']:8.1f}")
    return "\n".join(lines)


def configure(p: argparse.ArgumentParser) -> None:
    p.description = __doc__.split("\n\n")[0]
    p.add_argument("--datasets", nargs="+", metavar="NAME[:dense|:sparse]",
                   help=f"default: {' '.join(BASKET_DATASETS)}")
    p.add_argument("--models", nargs="+", metavar="NAME-DEPTH", help=f"default: {' '.join(BASKET_MODELS)}")
    p.add_argument("--quants", nargs="+", metavar="QUANT", help=f"default: {' '.join(BASKET_QUANTS)}")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 3)")
    p.add_argument("--epochs", type=int, help="epochs per configuration per round, >= 2 (default 5)")
    p.add_argument("--warmup", type=int,
                   help="untimed epochs before each round's timed ones, >= 0 (default 3): a process "
                        "page-faults its working set in again over the first epochs after a measurement "
                        "gave its memory back (twice the steady epoch time on Coauthor-Physics GCNII-16)")
    p.add_argument("--quick", action="store_true",
                   help="Cora and CiteSeer, FP32 and QLR INT4, 2 rounds of 4 epochs (a few minutes); "
                        "options given as well win")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1, as a runner worker)")
    p.add_argument("--against", default=PREVIOUS_RELEASE, metavar="REF",
                   help="git ref of the previous release to measure alongside, or 'none' "
                        f"(default {PREVIOUS_RELEASE[:10]}: the suite before the throughput work)")
    p.add_argument("--out", default="results/cost/throughput.jsonl", help="JSONL file the rows are appended to")
    p.add_argument("--no-out", action="store_true", help="print the table only")
    p.add_argument("--results", default="results", help="results root whose finished runs give epochs per run")


def execute(args: argparse.Namespace) -> int:
    from bench_suite.runner.estimate import finished_records, protocol_key
    from bench_suite.runner.store import utc_now
    from bench_suite.spec import RunSpec

    preset = QUICK if args.quick else FULL
    for a in preset:  # options given win over the preset
        if getattr(args, a) is None:
            setattr(args, a, preset[a])
    if args.epochs < 2 or args.rounds < 1 or args.warmup < 0:
        print(f"bench-suite throughput: --epochs must be >= 2 (got {args.epochs}), --rounds >= 1 "
              f"(got {args.rounds}) and --warmup >= 0 (got {args.warmup})", file=sys.stderr)
        return 2
    configs = [Config(d, m, q) for d in args.datasets for m in args.models for q in args.quants]
    for c in configs:  # a token naming nothing fails before anything is measured (BasketError: exit 2)
        c.flat()
    here = Path(__file__).resolve().parents[1]
    data_dir = args.data_dir or os.environ.get("BENCH_SUITE_DATA")
    finished: Dict[str, List[int]] = {}
    for rec in finished_records(Path(args.results)):
        n = (rec.get("metrics") or {}).get("epochs_run")
        if isinstance(n, int):
            finished.setdefault(RunSpec.from_dict(rec["spec"]).group_key(), []).append(n)
            finished.setdefault(protocol_key(rec["spec"]), []).append(n)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="bench-suite-throughput-") as tmp:
        releases: List[Release] = []
        worktree = None
        refs = {"current": "working tree"}
        commit = resolve_ref(here, args.against) if args.against != "none" else None
        done = False
        try:
            releases.append(Release("current", here, args.threads, data_dir))
            if commit is not None:
                worktree = Path(tmp) / "previous"
                subprocess.run(["git", "-C", str(here), "worktree", "add", "--detach", str(worktree), commit],
                               check=True, capture_output=True)
                refs["previous"] = f"{args.against} ({commit})"
                releases.append(Release("previous", worktree, args.threads, data_dir))
            meta = {"session": uuid.uuid4().hex, "rounds": args.rounds, "epochs": args.epochs, "warmup": args.warmup,
                    "threads": args.threads, "refs": refs}
            out = None if args.no_out else Path(args.out)
            rows: List[Dict[str, Any]] = []
            # dataset by dataset, each one's rows appended as soon as it is measured: a benchmark that
            # dies later (an hour for the default basket; once the kernel's OOM killer) keeps them
            for group in by_dataset(configs):
                measured = measure(group, releases, args.rounds, args.epochs, log=log, warmup=args.warmup)
                part = rows_of(group, releases, measured, finished, dict(meta, measured=utc_now()))
                rows += part
                if out is not None:
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with open(out, "a") as f:
                        for row in part:
                            f.write(json.dumps(row, sort_keys=True) + "\n")
            done = True
        finally:
            for r in releases:
                r.close(wait=done)
            if worktree is not None:
                subprocess.run(["git", "-C", str(here), "worktree", "remove", "--force", str(worktree)],
                               capture_output=True)
    print(table(rows))
    if out is not None:
        print(f"{len(rows)} rows appended to {out}")
    return 0
