"""``bench-suite export RESULTS_DIR --csv out.csv --parquet out.parquet``: records as one flat table."""
from __future__ import annotations

import argparse
import os
import sys


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", help="a results directory (searched recursively for run records)")
    p.add_argument("--csv", default=None, help="write a CSV file")
    p.add_argument("--parquet", default=None, help="write a Parquet file")
    p.add_argument("--status", action="append", default=None, choices=("ok", "failed", "timeout"),
                   help="keep only records with this status (repeatable; default: all)")


def execute(args: argparse.Namespace) -> int:
    from bench_suite.runner.export import records_frame

    if not args.csv and not args.parquet:
        print("bench-suite export: error: give --csv FILE and/or --parquet FILE", file=sys.stderr)
        return 2
    for opt, path in (("--csv", args.csv), ("--parquet", args.parquet)):
        if path and (os.path.isdir(path) or not os.path.isdir(os.path.dirname(os.path.abspath(path)))):
            raise ValueError(f"{opt} {path!r}: {'is a folder' if os.path.isdir(path) else 'its folder does not exist'};"
                             " name a file in an existing folder")
    df = records_frame(args.results, statuses=args.status)
    try:
        if args.csv:
            df.to_csv(args.csv, index=False)
        if args.parquet:
            df.to_parquet(args.parquet, index=False)
    except OSError as exc:  # permissions, a full disk
        raise ValueError(f"cannot write the export ({exc.filename or args.csv or args.parquet}): "
                         f"{exc.strerror or exc}") from None
    print(f"exported {len(df)} records x {df.shape[1]} columns from {args.results}", file=sys.stderr)
    return 0
