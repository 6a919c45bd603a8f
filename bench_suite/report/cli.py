"""``bench-suite report RESULTS_DIR... --out reports/``: render figures and tables from stored records."""
from __future__ import annotations

import argparse
import os
import shlex
import sys


def _seeds(text: str) -> list[int]:
    """``0-9`` or ``0,1,2`` → a list of seeds."""
    out: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part.strip()[1:]:
                a, b = part.split("-", 1)
                out += list(range(int(a), int(b) + 1))
            elif part.strip():
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds {text!r} is not valid; use e.g. 0-9 or 0,1,2") from None
    return sorted(set(out))


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="*", default=["results"], metavar="RESULTS_DIR",
                   help="directories of run records (default: results)")
    p.add_argument("--out", default="reports", help="output directory (default: reports)")
    p.add_argument("--seeds", type=_seeds, default=None,
                   help="expected seeds, e.g. 0-9 (default: the union of seeds seen in each matrix)")
    p.add_argument("--depth", type=int, default=None,
                   help="depth of the method × bits tables (default: each method's shallowest depth)")
    p.add_argument("--metric", default="test_score",
                   help="metric of tables and figures (default: test_score, each dataset's own metric: "
                        "accuracy, or ROC-AUC for minesweeper and tolokers; also test_acc, test_roc_auc, ...)")
    p.add_argument("--matrix", action="append", default=[], metavar="MATRIX",
                   help="matrix the records come from (name or YAML, repeatable): its runs without a record "
                        "are listed as not run")
    p.add_argument("--no-figures", action="store_true", help="skip the figures (tables and index only)")
    p.add_argument("--against", action="append", default=[], metavar="RESULTS_DIR",
                   help="compare with another result store (repeatable: merged): per group (spec without the seed), "
                        "both means, the difference and its Welch 95%% interval, n of each, and the groups found in "
                        "one store only (tables/comparison.*, a section of README.md)")


def duplicates_message(dups, what: str) -> str:
    """``report: 3 run ids found more than once in the records read; kept ... from A, ... from B``."""
    kept = dups.drop_duplicates("run_id")["kept_root"].value_counts().sort_index()
    n = dups["run_id"].nunique()
    return (f"report: {n} run id{'s' if n != 1 else ''} found more than once in {what}; one record kept for each "
            "(an ok record first, then the newest finished): " + ", ".join(f"{n} from {root}" for root, n in kept.items())
            + f"; {len(dups)} duplicate record{'s' if len(dups) != 1 else ''} dropped")


def execute(args: argparse.Namespace) -> int:
    from bench_suite.report import render_report

    argv = ["bench-suite", "report", *args.results, "--out", args.out]
    if args.seeds is not None:
        argv += ["--seeds", ",".join(map(str, args.seeds))]
    if args.depth is not None:
        argv += ["--depth", str(args.depth)]
    if args.metric != "test_score":
        argv += ["--metric", args.metric]
    for m in args.matrix:
        argv += ["--matrix", m]
    if args.no_figures:
        argv.append("--no-figures")
    for b in args.against:
        argv += ["--against", b]
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"--out {args.out!r} is a file; name a folder for the report")
    try:
        res = render_report(args.results, args.out, seeds=args.seeds, depth=args.depth, metric=args.metric,
                            command=shlex.join(argv), figures=not args.no_figures, matrices=args.matrix,
                            against=args.against)
    except (PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError) as exc:
        raise ValueError(f"cannot write the report under --out {args.out!r}: {exc.strerror} ({exc.filename})") from None
    except OSError as exc:  # a full disk, say: the files written so far are a partial report
        raise ValueError(f"cannot write the report under --out {args.out!r}: {exc.strerror or exc}") from None
    for dups, what in ((res.duplicates, "the records read"), (res.duplicates_against, "the records of --against")):
        if len(dups):
            print(duplicates_message(dups, what), file=sys.stderr)
    msg = f"report: {res.n_train} training and {res.n_speed} speed records → {len(res.files)} files in {res.out}"
    if res.incomplete_groups:
        msg += f"; {res.incomplete_groups} groups with missing or failed seeds (see README.md)"
    if res.not_run:
        msg += f"; {res.not_run} runs of the matrix not run yet"
    if not res.n_train and not res.n_speed:
        msg += "; no records found"
    if res.comparison is not None:
        c = res.comparison
        msg += (f"; against {', '.join(c.roots_b)}: {c.count('both')} groups in both, {c.count('A')} only here, "
                f"{c.count('B')} only there")
    print(msg, file=sys.stderr)
    return 0
