"""The ``fpwb`` command: one argparse subcommand per task.

    fpwb report [NOTEBOOK ...] [-p NAME VALUE ...] [--out DIR] [--hide-code]
    fpwb figures [--report DIR] [--dest DIR]
    fpwb sweep NOTEBOOK --grid GRID.yaml [--out DIR] [--scheduler ADDRESS] [--workers N] [--force]

Exit status: 0 when everything ran, 1 when a notebook failed, 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .runs import report, sweep


def _report(args) -> int:
    runs = report.run_report(args.notebooks, dict(args.parameters or []), args.out,
                             hide_code=args.hide_code, progress=not args.quiet,
                             announce=lambda message: print(f"fpwb report: {message}", file=sys.stderr))
    for run in runs:
        print(f"{run.status:>6}  {run.name}  ({run.wall_time:.1f} s)")
    failed = [run for run in runs if run.status != "ok"]
    for run in failed:
        where = (f"the previous good run is kept in {Path(args.out) / run.name}; this failed run "
                 f"is in {run.kept}" if run.kept else "")
        notebook = f"partly executed notebook kept at {run.notebook}" if run.notebook else \
            "the notebook did not start"
        print(f"error: {run.error}\n       {notebook}" + (f"\n       {where}" if where else ""),
              file=sys.stderr)
    print(f"report: {args.out}/index.html")
    return 1 if failed else 0


def _figures(args) -> int:
    for path in report.copy_key_figures(args.report, args.dest):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fpwb", description="Frontprop workbench")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("report", help="run notebooks through papermill into an HTML report",
                            description="Run notebooks (all in notebooks/ by default) with their "
                                        "default or given parameters into a report folder.")
    p.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                   help="notebook name (00_quickstart), unique prefix (00) or path; all when none")
    p.add_argument("-p", "--parameter", dest="parameters", nargs=2, action="append",
                   metavar=("NAME", "VALUE"),
                   help="set a parameter in every notebook run; each must declare it")
    p.add_argument("--out", default="reports", help="report folder (default: reports)")
    p.add_argument("--hide-code", action="store_true", help="HTML pages show outputs only")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_report)

    p = commands.add_parser("figures", help="copy each notebook's key figure out of a report",
                            description="Copy <report>/<notebook>/<key figure> to "
                                        "<dest>/<notebook>.png, for the README.")
    p.add_argument("--report", default="reports", help="report folder (default: reports)")
    p.add_argument("--dest", default="docs/figures", help="target folder (default: docs/figures)")
    p.set_defaults(run=_figures)

    sweep.add_sweep_command(commands)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ValueError as error:
        parser.exit(2, f"fpwb {args.command}: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
