"""``bench-suite``: the command line.

Subcommands live in their own modules, each exposing ``configure(parser)`` and
``execute(args) -> int``; heavy imports happen inside ``execute`` so that
``bench-suite --help`` and ``bench-suite list`` stay fast.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import List, Optional

COMMANDS = {
    "list": ("bench_suite.cli_list", "list registered plugins and their parameters"),
    "train": ("bench_suite.cli_train", "run one training: key=value arguments, prints the record as JSON"),
    "run": ("bench_suite.runner.cli", "run a benchmark matrix (shipped name or YAML path)"),
    "status": ("bench_suite.runner.cli_status", "count done, failed and pending runs of a matrix"),
    "export": ("bench_suite.runner.cli_export", "export a results directory to CSV / Parquet"),
    "report": ("bench_suite.report.cli", "render figures and tables from stored records"),
    "speed": ("bench_suite.engine.cli", "time FP32 DGL against the integer engine"),
    "throughput": ("bench_suite.throughput", "training epochs per second of a fixed basket, against a previous release"),
}


class OneLineParser(argparse.ArgumentParser):
    """Usage errors (an unknown option, ``--workers abc``) in one line naming the command, exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import a local plugin module (repeatable)")
    p.add_argument("--data-dir", default=None, help="dataset directory (default: $BENCH_SUITE_DATA)")
    p.add_argument("--download", action="store_true", help="allow loaders to download missing datasets")


class VersionAction(argparse.Action):
    """``--version``: the lines of :func:`bench_suite.env.version_lines` (torch and dgl are imported only here)."""

    def __init__(self, option_strings, dest, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from bench_suite.env import version_lines

        print("\n".join(version_lines()))
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="bench-suite", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action=VersionAction,
                        help="print the package version, git commit, torch and dgl versions, and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        common_options(p)
        mod = importlib.import_module(module)
        mod.configure(p)
        p.set_defaults(_module=mod)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value pairs may follow options (`run smoke --workers 2 epochs=3`): argparse stops
    # filling a nargs="*" positional at the first option, so collect the rest here.
    kv_dest = next((d for d in ("overrides", "assignments") if isinstance(getattr(args, d, None), list)), None)
    if extra and kv_dest and all("=" in e and not e.startswith("-") for e in extra):
        setattr(args, kv_dest, getattr(args, kv_dest) + extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not args.command:
        parser.print_help()
        return 2
    from bench_suite.registry import RegistryError, load_all, report_load_failures
    from bench_suite.runner.executors import ExecutorError
    from bench_suite.runner.store import StoreWriteError
    from bench_suite.spec import SpecError

    try:
        # a plugin that fails to import is left out; the warning naming it comes once the command
        # has checked its input (an error that names the plugin already says it all)
        if not getattr(args, "_loads_plugins", False):  # `list` loads them itself, only when its index is stale
            load_all(args.plugin)
        code = int(args._module.execute(args) or 0)
        report_load_failures()
        return code
    except (RegistryError, SpecError, FileNotFoundError, ValueError, StoreWriteError, ExecutorError) as exc:
        # bad input (unknown key, bad value, missing or malformed file): a clear message, exit 2.
        # ValueError covers plugin constructors refusing a value; BENCH_SUITE_TRACEBACK=1 shows where.
        if os.environ.get("BENCH_SUITE_TRACEBACK"):
            raise
        report_load_failures(skip_named_in=str(exc))
        print(f"bench-suite {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (`bench-suite status depth --list pending | head`): stop quietly;
        # stdout goes to devnull so the interpreter's final flush does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command killed by a closed pipe


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
