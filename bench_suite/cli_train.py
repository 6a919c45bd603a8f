"""``bench-suite train key=value ...``: one run, its record printed as JSON.

The tuned defaults apply as in a matrix run, so the same keys give the same spec and run id.
Stdout carries only the record; progress goes to stderr: a line per epoch with ``-v``, else a
bar when stderr is a terminal.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Optional, TextIO


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("assignments", nargs="*", metavar="KEY=VALUE",
                   help="spec keys, e.g. dataset=cora model=gcn depth=2 seed=0")
    p.add_argument("--no-defaults", action="store_true",
                   help="skip the tuned defaults (bench_suite/defaults/, baselines/defaults.yaml) that matrix runs "
                        "apply; unset keys then take the constructors' defaults")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print one line per epoch on stderr: epoch, training loss, validation score, best "
                        "validation score so far, seconds elapsed (without -v: a progress bar when stderr is "
                        "a terminal)")


class EpochProgress:
    """The ``progress`` callback of :func:`bench_suite.train.fit`: after every epoch, a line on
    ``stream`` (``bar=False``) or a step of a tqdm bar (``bar=True``).

    It keeps the best validation score seen so far; elapsed time counts from its creation, the
    start of the run (dataset loading included).
    """

    def __init__(self, epochs: int, stream: TextIO, bar: bool = False) -> None:
        self.epochs = epochs
        self.stream = stream
        self.best = math.nan
        self.t0 = time.perf_counter()
        self.bar = None
        if bar:
            from tqdm import tqdm

            self.bar = tqdm(total=epochs, unit="epoch", file=stream, dynamic_ncols=True)

    def __call__(self, epoch: int, loss: float, val_score: float) -> None:
        if not math.isnan(val_score) and (math.isnan(self.best) or val_score > self.best):
            self.best = val_score
        if self.bar is not None:
            self.bar.set_postfix({"loss": f"{loss:.4f}", "val": f"{val_score:.4f}", "best": f"{self.best:.4f}"},
                                 refresh=False)
            self.bar.update(1)
            return
        width = len(str(self.epochs))
        print(f"epoch {epoch + 1:>{width}}/{self.epochs}  loss {loss:.4f}  val {val_score:.4f}  "
              f"best {self.best:.4f}  elapsed {time.perf_counter() - self.t0:.1f}s", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def epoch_progress(epochs: int, verbose: bool, stream: TextIO) -> Optional[EpochProgress]:
    """Lines with ``verbose``, a bar on an interactive ``stream``, else nothing."""
    if verbose:
        return EpochProgress(epochs, stream)
    if stream.isatty():
        return EpochProgress(epochs, stream, bar=True)
    return None


def execute(args: argparse.Namespace) -> int:
    from bench_suite.cli import print_json
    from bench_suite.spec import spec_from_cli
    from bench_suite.train import run

    spec = spec_from_cli(args.assignments, defaults=not args.no_defaults)
    progress = epoch_progress(spec.train.epochs, args.verbose, sys.stderr)
    try:
        record = run(spec, data_dir=args.data_dir, download=args.download, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    print_json(record)
    return 0
