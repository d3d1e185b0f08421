"""Parameter sweeps of a notebook: a grid of papermill runs on Dask distributed.

A grid file (YAML, :mod:`fpwb.runs.grid`) lists the values of each swept parameter under
``grid`` and constant parameters under ``fixed``; ``metric`` optionally names the results.json
entry the summary figure shows. Every combination of grid values is one run. Runs execute through
the notebook runner (:mod:`fpwb.runs.notebook`; working directory: the repository root) on Dask
distributed (:mod:`fpwb.runs.workers`): a LocalCluster on this machine, one process per worker and
one thread each, unless a scheduler address is given. Each run has a folder ``runs/<name>`` named
from its grid values (:mod:`fpwb.runs.store`): the executed notebook, what the notebook wrote into
its ``out_dir`` (``results.json``, figures), ``parameters.yaml`` (every parameter value:
``papermill notebook.ipynb OUT.ipynb -f parameters.yaml -p out_dir DIR --cwd REPO`` reruns it),
a TensorBoard event file with the run's parameters and result numbers (:mod:`fpwb.runs.hparams`;
``tensorboard --logdir <sweep>/runs`` shows the grid in its HParams view) and ``run.json`` (:mod:`fpwb.runs.records`). The folder ends with
``results.csv`` (one row per run), ``summary.png`` and ``sweep.json`` (:mod:`fpwb.runs.tables`),
the entry the report index lists: ``fpwb sweep`` rewrites ``<report>/index.html`` when the sweep
folder is ``<report>/sweeps/<name>`` (the default, under ``reports/``).

A sweep folder belongs to one pair of notebook code and grid, hashed into ``sweep_id``. Running
the same pair again skips the runs that completed and retries the others; a changed notebook or
grid is refused (pass a new ``--out``, or ``--force`` to discard the old results), so one table
never mixes two experiments. Ctrl-C or SIGTERM stops the sweep: the runs that finished are
recorded, ``sweep.json`` says ``interrupted``, the lock is released, and the exit status is
128 + the signal number (130, 143).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

from . import hparams, records, store, tables
from .grid import Grid, Run, digest, run_name
from .notebook import OUT_PARAM, Parameters, UndeclaredParameters
from .workers import dispatch

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class Interrupted(KeyboardInterrupt):
    """The sweep was stopped by a signal (SIGINT or SIGTERM)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


class Sweep:
    """A notebook, a grid and a sweep folder: the runs to do.

    Building one validates everything and touches nothing on disk: an unknown parameter, a grid
    that sets ``out_dir``, or a notebook without ``out_dir`` and ``seed`` parameters is a ValueError.
    """

    def __init__(self, notebook, grid, out=None):
        self.notebook = Path(notebook)
        if isinstance(grid, Grid):
            self.grid, grid_name = grid, None
        elif isinstance(grid, dict):
            self.grid, grid_name = Grid.from_dict(grid), None
        else:
            self.grid, grid_name = Grid.load(grid), Path(grid).stem
        self.name = f"{self.notebook.stem}--{grid_name}" if grid_name else self.notebook.stem
        self.folder = Path(out) if out is not None else Path("reports", "sweeps", self.name)

        where = f"notebook {str(self.notebook)!r}"
        declared = Parameters.inspect(self.notebook)
        self.node = nbformat.read(self.notebook, as_version=4)
        given = {**self.grid.fixed, **{k: v[0] for k, v in self.grid.grid.items()}}
        try:
            declared.resolve(given, runner="sweep", hint="each run's folder")
        except UndeclaredParameters as exc:
            raise ValueError(f"{where} has no parameter {', '.join(map(repr, exc.unknown))}; its "
                             f"parameters are {sorted(set(exc.declared) - {OUT_PARAM})}") from None
        if "seed" not in declared.sources:
            raise ValueError(f"{where} must declare a seed parameter, so each run can be reproduced")
        # Literal defaults are written into every run's parameters; expressions stay "unpinned".
        self.unpinned = {k: v for k, v in declared.unpinned.items()
                         if k not in given and k != OUT_PARAM}
        if "seed" in self.unpinned:
            raise ValueError(f"{where}: seed defaults to {self.unpinned['seed']!r}, not a value; "
                             f"set seed in the grid or under fixed")

        code = [c.source for c in self.node.cells if c.cell_type == "code"]
        kernel = self.node.metadata.get("kernelspec", {}).get("name")
        self.notebook_hash = digest([kernel, code])
        self.sweep_id = digest([self.notebook_hash, self.grid.grid, self.grid.fixed])[:16]
        self.runs = [Run(run_name(values), values,
                         declared.resolve({**self.grid.fixed, **values}, runner="sweep",
                                          hint="each run's folder"))
                     for values in self.grid.combinations()]

    def run_folder(self, run: Run) -> Path:
        return self.folder / store.RUNS_DIR / run.name

    def __repr__(self) -> str:
        return (f"Sweep({str(self.notebook)!r}, {len(self.runs)} runs, out={str(self.folder)!r}, "
                f"sweep_id={self.sweep_id!r})")


@dataclass
class SweepResult:
    """What a sweep invocation did: the table rows, counts, and where the outputs are."""

    folder: Path
    rows: list
    executed: int
    skipped: int
    wall_time_s: float
    table: Path
    figure: Path | None
    status: str

    @property
    def failed(self) -> list:
        return [r for r in self.rows if r["status"] == "failed"]

    @property
    def ok(self) -> bool:
        return self.status == "complete"

    def __repr__(self) -> str:
        return (f"SweepResult({str(self.folder)!r}, {self.status}: {len(self.rows)} runs, "
                f"{len(self.failed)} failed, {self.executed} executed, {self.skipped} skipped, "
                f"{self.wall_time_s:.1f} s)")


def run_sweep(notebook, grid, out=None, *, scheduler: str | None = None, workers: int | None = None,
              force: bool = False, progress: bool = True) -> SweepResult:
    """Run every grid point of ``notebook`` not yet completed in ``out``, then tabulate the sweep.

    ``grid`` is a grid file path, a :class:`Grid` or its dict. ``out`` defaults to
    ``reports/sweeps/<notebook>--<grid file>``. Without ``scheduler`` the runs go to a LocalCluster
    of ``workers`` processes (default: one per core); with it, to that Dask scheduler's workers,
    which need this repository and its environment. Raises ValueError before running anything
    when the grid does not fit the notebook or the folder holds another sweep, and
    :class:`Interrupted` after SIGINT or SIGTERM (what finished is recorded first).
    """
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    if scheduler is not None and workers is not None:
        raise ValueError("workers sizes a LocalCluster; a scheduler's cluster has its own workers "
                         "(start them with `dask worker ADDRESS`)")
    sweep = Sweep(notebook, grid, out)
    for name, expression in sweep.unpinned.items():
        print(f"fpwb sweep: {name} keeps its notebook default {expression}; set it under fixed to "
              f"pin it", file=sys.stderr)
    with _signals_interrupt(), store.locked(sweep.folder):
        store.prepare(sweep, force)
        return _execute(sweep, scheduler, workers, progress)


@contextlib.contextmanager
def _signals_interrupt():
    """SIGINT and SIGTERM raise :class:`Interrupted` once (a repeat while the sweep winds down is
    ignored, so the records get written); the previous handlers come back afterwards. Only the
    main thread can handle signals: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = []

    def handler(signum, frame):
        if not stopping:
            stopping.append(signum)
            raise Interrupted(signum)
        print(f"fpwb sweep: {signal.Signals(signum).name} again; still recording what finished",
              file=sys.stderr)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def _execute(sweep: Sweep, scheduler, workers, progress) -> SweepResult:
    start = time.perf_counter()
    created = (records.read_json(sweep.folder / tables.SWEEP_FILE) or {}).get("created", records.now())
    todo = [run for run in sweep.runs if not store.completed(sweep, run)]
    n = workers or os.cpu_count() or 1
    where = scheduler or f"LocalCluster, {n} worker{'s' * (n > 1)}"
    tables.write_summary(sweep, created, where, 0.0, final=False)  # workers find sweep_id here
    executed = 0

    def record(run, report):
        store.record(sweep, run, report, extra=lambda staging, entry: hparams.write_run(
            staging, run.parameters, sweep.grid.grid, entry,
            records.read_json(staging / tables.RESULTS_FILE)))

    try:
        if todo:
            executed = dispatch(sweep, todo, scheduler, n, progress, record)
    finally:  # also on Ctrl-C and SIGTERM: the table and sweep.json show what is done
        wall = round(time.perf_counter() - start, 3)
        rows, table, figure, status = tables.write_summary(sweep, created, where, wall, final=True)
    return SweepResult(sweep.folder, rows, executed, len(sweep.runs) - len(todo), wall, table,
                       figure, status)


def add_sweep_command(subparsers) -> argparse.ArgumentParser:
    """Register ``sweep`` on an argparse subparsers object; the command is ``args.run(args)``."""
    parser = subparsers.add_parser(
        "sweep", help="run a notebook over a parameter grid on Dask",
        description="Run NOTEBOOK once per point of the grid through papermill on Dask "
                    "distributed. Running it again skips completed runs. Exit status: 0 all runs "
                    "ok, 1 a run failed, 2 bad input, 130 interrupted (Ctrl-C), 143 terminated "
                    "(SIGTERM).")
    parser.add_argument("notebook", metavar="NOTEBOOK",
                        help="the notebook (declares parameters seed and out_dir)")
    parser.add_argument("--grid", required=True, metavar="GRID.yaml",
                        help="grid: lists of values, fixed: constant parameters, metric: optional")
    parser.add_argument("--out", metavar="DIR", help="sweep folder (default reports/sweeps/NOTEBOOK--GRID)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="Dask scheduler, e.g. tcp://host:8786 (default: a LocalCluster here)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="LocalCluster worker processes (default: one per core)")
    parser.add_argument("--force", action="store_true",
                        help="delete the results of another notebook or grid found in DIR")
    parser.set_defaults(run=sweep_command)
    return parser


def sweep_command(args) -> int:
    """Run the sweep the parsed arguments describe; returns the exit code."""
    try:
        result = run_sweep(args.notebook, args.grid, args.out, scheduler=args.scheduler,
                           workers=args.workers, force=args.force)
    except (ValueError, RuntimeError, OSError) as exc:  # bad input, busy folder, no scheduler
        print(f"fpwb sweep: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        print("fpwb sweep: interrupted; what finished is recorded; run the same command again to "
              "resume", file=sys.stderr)
        return 128 + exc.signum if isinstance(exc, Interrupted) else EXIT_INTERRUPTED
    print(f"{len(result.rows) - len(result.failed)} of {len(result.rows)} runs ok "
          f"({result.executed} executed, {result.skipped} skipped) in {result.wall_time_s:.1f} s; "
          f"table {result.table}")
    if result.folder.resolve().parent.name == "sweeps":  # <report>/sweeps/<name>: list it there
        from .report import write_index

        print(f"report index: {write_index(result.folder.resolve().parents[1])}")
    for row in result.failed:
        print(f"  failed {row['run']}: {row['error']}", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_FAILED


def main(argv=None) -> int:
    """``python -m fpwb.runs.sweep NOTEBOOK --grid GRID.yaml ...``, the same as ``fpwb sweep``."""
    parser = argparse.ArgumentParser(prog="fpwb")
    add_sweep_command(parser.add_subparsers(required=True))
    args = parser.parse_args(["sweep", *(sys.argv[1:] if argv is None else argv)])
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
