"""Parameter sweeps of a notebook: a grid of papermill runs on Dask distributed.

A grid file (YAML) lists the values of each swept parameter under ``grid`` and constant parameters
under ``fixed``; ``metric`` optionally names the results.json entry the summary figure shows::

    grid:
      w_boost: [0.02, 0.05]
      t_decay: [1e-4, 1e-3]
    fixed:
      smoke: true
      seed: 0
    metric: headline.accuracy     # nested results.json entries are named with dots

Every combination of grid values is one run. Runs execute through papermill (working directory:
the repository root) on Dask distributed: a LocalCluster on this machine, one process per worker
and one thread each, unless a scheduler address is given. Each run has a folder ``runs/<name>``
named from its grid values; the notebook writes ``results.json`` (and any figures) into the
``out_dir`` parameter the sweep passes, next to the executed notebook. The sweep adds
``parameters.yaml`` (every parameter value: ``papermill notebook.ipynb OUT.ipynb -f
parameters.yaml -p out_dir DIR --cwd REPO`` reruns it) and ``run.json`` (status, error, time).
The folder ends with ``results.csv`` (one row per run), ``summary.png`` and ``sweep.json``, the
entry the report index lists: ``fpwb sweep`` rewrites ``<report>/index.html`` when the sweep folder
is ``<report>/sweeps/<name>`` (the default, under ``reports/``).

A sweep folder belongs to one pair of notebook code and grid, hashed into ``sweep_id``. Running
the same pair again skips the runs that completed and retries the others; a changed notebook or
grid is refused (pass a new ``--out``, or ``--force`` to discard the old results), so one table
never mixes two experiments.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import hashlib
import itertools
import json
import math
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import nbformat
import yaml
from matplotlib.figure import Figure

from .experiments import repo_root

GRID_KEYS = ("grid", "fixed", "metric")
OUT_PARAM = "out_dir"
RESULTS_FILE = "results.json"
SWEEP_FILE = "sweep.json"
TABLE_FILE = "results.csv"
FIGURE_FILE = "summary.png"
NOTEBOOK_COPY = "notebook.ipynb"
LOCK_FILE = ".lock"
MAX_NAME = 120
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _GridLoader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` as a float (plain YAML 1.1 wants ``1.0e-3``, else a string)."""


_GridLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _digest(value) -> str:
    return hashlib.sha256(_canonical(value).encode()).hexdigest()


@dataclass(frozen=True)
class Grid:
    """Values per swept parameter, constant parameters, and the results entry to plot."""

    grid: dict
    fixed: dict
    metric: str | None = None

    @classmethod
    def load(cls, path) -> Grid:
        """Read a grid file (YAML with ``grid``, optional ``fixed`` and ``metric``)."""
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.load(f, Loader=_GridLoader)
        except FileNotFoundError:
            raise ValueError(f"grid file {str(path)!r} does not exist") from None
        except yaml.YAMLError as exc:
            raise ValueError(f"grid file {str(path)!r} is not valid YAML: {exc}") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data, source: str = "grid") -> Grid:
        if not isinstance(data, dict) or not isinstance(data.get("grid"), dict) or not data["grid"]:
            raise ValueError(f"{source}: expected a mapping with a non-empty 'grid' mapping of "
                             f"parameter -> list of values")
        unknown = set(data) - set(GRID_KEYS)
        if unknown:
            raise ValueError(f"{source}: unknown keys {sorted(unknown)}; expected {list(GRID_KEYS)}")
        grid, fixed, metric = data["grid"], data.get("fixed") or {}, data.get("metric")
        if not isinstance(fixed, dict):
            raise ValueError(f"{source}: 'fixed' must map parameter -> value, got {fixed!r}")
        if metric is not None and not isinstance(metric, str):
            raise ValueError(f"{source}: 'metric' must be the name of a results.json entry, got {metric!r}")
        for name, values in grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"{source}: grid.{name} must be a non-empty list of values, got {values!r}")
            labels = [_label(v) for v in values]
            if len(set(labels)) < len(labels):
                raise ValueError(f"{source}: grid.{name} repeats a value (or two values name the "
                                 f"same run): {values!r}")
        both = set(grid) & set(fixed)
        if both:
            raise ValueError(f"{source}: {sorted(both)} appear in both grid and fixed")
        if OUT_PARAM in grid or OUT_PARAM in fixed:
            raise ValueError(f"{source}: {OUT_PARAM} is set by the sweep (each run's folder); remove it")
        try:
            _canonical([grid, fixed])
        except TypeError as exc:
            raise ValueError(f"{source}: values must be numbers, strings, booleans, null, lists or "
                             f"mappings ({exc})") from None
        return cls(dict(grid), dict(fixed), metric)

    def combinations(self) -> list[dict]:
        """Every combination of grid values, the first parameter varying slowest."""
        return [dict(zip(self.grid, values)) for values in itertools.product(*self.grid.values())]

    def __len__(self) -> int:
        return math.prod(len(v) for v in self.grid.values())

    def __repr__(self) -> str:
        shape = " x ".join(f"{k}[{len(v)}]" for k, v in self.grid.items())
        return f"Grid({shape} = {len(self)} runs, fixed={self.fixed!r})"


def _label(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def run_name(values: dict) -> str:
    """Folder name of a run from its grid values, e.g. ``w_boost=0.05__t_decay=0.001``.

    A name that had to be shortened or had characters outside ``[A-Za-z0-9._=+-]`` replaced gets
    an 8-character hash of the values, so names stay unique.
    """
    text = "__".join(f"{k}={_label(v)}" for k, v in values.items())
    safe = re.sub(r"[^A-Za-z0-9._=+-]", "-", text)[:MAX_NAME]
    return safe if safe == text else f"{safe}-{_digest(values)[:8]}"


@dataclass(frozen=True)
class Run:
    """One notebook execution: its folder name, grid values and every parameter it gets."""

    name: str
    values: dict
    parameters: dict


class Sweep:
    """A notebook, a grid and a sweep folder: the runs to do and what is already done.

    Building one validates everything and touches nothing on disk: an unknown parameter, a grid
    that sets ``out_dir``, or a notebook without ``out_dir`` and ``seed`` parameters is a ValueError.
    """

    def __init__(self, notebook, grid, out=None):
        import papermill  # slow to import; `fpwb --help` should not wait for it

        self.notebook = Path(notebook)
        if not self.notebook.is_file():
            raise ValueError(f"notebook {str(self.notebook)!r} does not exist")
        if isinstance(grid, Grid):
            self.grid, grid_name = grid, None
        elif isinstance(grid, dict):
            self.grid, grid_name = Grid.from_dict(grid), None
        else:
            self.grid, grid_name = Grid.load(grid), Path(grid).stem
        self.name = f"{self.notebook.stem}--{grid_name}" if grid_name else self.notebook.stem
        self.folder = Path(out) if out is not None else Path("reports", "sweeps", self.name)

        self.node = nbformat.read(self.notebook, as_version=4)
        where = f"notebook {str(self.notebook)!r}"
        try:
            declared = papermill.inspect_notebook(str(self.notebook))
        except ValueError as exc:  # e.g. no kernel name in its metadata
            raise ValueError(f"{where}: {exc}") from None
        if OUT_PARAM not in declared:
            raise ValueError(f"{where} must declare an {OUT_PARAM} parameter (a cell tagged "
                             f"'parameters') where it writes {RESULTS_FILE}; it declares {sorted(declared)}")
        unknown = [p for p in [*self.grid.grid, *self.grid.fixed] if p not in declared]
        if unknown:
            raise ValueError(f"{where} has no parameter {', '.join(map(repr, unknown))}; "
                             f"its parameters are {sorted(set(declared) - {OUT_PARAM})}")
        # Literal defaults are written into every run's parameters; expressions stay "unpinned".
        defaults, self.unpinned = {}, {}
        for name, info in declared.items():
            if name == OUT_PARAM:
                continue
            value = _literal(info["default"])
            if value is _literal:
                self.unpinned[name] = info["default"]
            else:
                defaults[name] = value
        if "seed" not in declared:
            raise ValueError(f"{where} must declare a seed parameter, so each run can be reproduced")
        self.unpinned = {k: v for k, v in self.unpinned.items()
                         if k not in self.grid.grid and k not in self.grid.fixed}
        if "seed" in self.unpinned:
            raise ValueError(f"{where}: seed defaults to {self.unpinned['seed']!r}, not a value; "
                             f"set seed in the grid or under fixed")

        code = [c.source for c in self.node.cells if c.cell_type == "code"]
        kernel = self.node.metadata.get("kernelspec", {}).get("name")
        self.notebook_hash = _digest([kernel, code])
        self.sweep_id = _digest([self.notebook_hash, self.grid.grid, self.grid.fixed])[:16]
        self.runs = []
        for values in self.grid.combinations():
            parameters = {**defaults, **self.grid.fixed, **values}
            self.runs.append(Run(run_name(values), values, parameters))

    def run_folder(self, run: Run) -> Path:
        return self.folder / "runs" / run.name

    def completed(self, run: Run) -> bool:
        """True when the run finished without error in this sweep (its run.json says so)."""
        record = _read_json(self.run_folder(run) / "run.json")
        return bool(record) and record.get("status") == "ok" and record.get("sweep_id") == self.sweep_id

    def prepare(self, force: bool = False):
        """Reopen the (existing) sweep folder; refuse one that holds another notebook or grid."""
        summary = _read_json(self.folder / SWEEP_FILE)
        if summary is None and any(p.name != LOCK_FILE for p in self.folder.glob("*")):
            raise ValueError(f"{self.folder} exists and is not a sweep folder (no {SWEEP_FILE}); "
                             f"pass another --out")
        if summary is not None and summary.get("sweep_id") != self.sweep_id:
            if not force:
                changed = ("grid" if (summary.get("grid"), summary.get("fixed"))
                           != (self.grid.grid, self.grid.fixed) else "notebook code")
                raise ValueError(f"{self.folder} holds a sweep of another {changed} "
                                 f"(sweep_id {summary.get('sweep_id')}, now {self.sweep_id}); pass a "
                                 f"new --out to keep both, or --force to delete its results")
            for name in ("runs", TABLE_FILE, FIGURE_FILE, SWEEP_FILE, NOTEBOOK_COPY):
                path = self.folder / name
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        nbformat.write(self.node, self.folder / NOTEBOOK_COPY)

    def __repr__(self) -> str:
        return (f"Sweep({str(self.notebook)!r}, {len(self.runs)} runs, out={str(self.folder)!r}, "
                f"sweep_id={self.sweep_id!r})")


def _literal(source: str):
    """The JSON-able value of a default's source text, or ``_literal`` itself when it has none."""
    try:
        value = ast.literal_eval(source)
        _canonical(value)
    except (ValueError, SyntaxError, TypeError):
        return _literal
    return value


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_json(path: Path, data):
    """Write through a temporary file, so a crash never leaves half a record."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def execute_run(notebook_json: str, notebook_name: str, parameters: dict, folder: str,
                sweep_id: str) -> dict:
    """Execute one run (on a Dask worker) and report it; notebook errors come back, never raise.

    A worker that sees the sweep folder (this machine, or a shared file system) writes the run in
    place; any other works in a temporary folder and sends its files back with the report.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    start = time.perf_counter()
    sweep_folder = Path(folder).parents[1]
    shared = (_read_json(sweep_folder / SWEEP_FILE) or {}).get("sweep_id") == sweep_id
    with tempfile.TemporaryDirectory(prefix="fpwb-run-") as tmp:
        if shared:
            work, source = Path(folder), sweep_folder / NOTEBOOK_COPY
        else:
            work, source = Path(tmp, "out"), Path(tmp, NOTEBOOK_COPY)
            work.mkdir()
            source.write_text(notebook_json, encoding="utf-8")
        error = None
        try:
            papermill.execute_notebook(str(source), str(work / notebook_name),
                                       parameters={**parameters, OUT_PARAM: str(work.resolve())},
                                       cwd=str(repo_root()), progress_bar=False,
                                       # Quiet kernels: every shutdown logs a "KeyboardInterrupt"
                                       # (jupyter_client interrupts first); notebook errors are
                                       # recorded from the notebook itself.
                                       extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
            if not (work / RESULTS_FILE).is_file():
                error = {"type": "MissingResults",
                         "message": f"the notebook wrote no {RESULTS_FILE} into {OUT_PARAM}"}
        except PapermillExecutionError as exc:
            error = {"type": exc.ename, "message": exc.evalue, "cell": exc.exec_count}
        except Exception as exc:  # the kernel died or would not start: this run fails, others go on
            error = {"type": type(exc).__name__, "message": str(exc)}
        files = {} if shared else {str(p.relative_to(work)): p.read_bytes()
                                   for p in sorted(work.rglob("*")) if p.is_file()}
    return {"error": error, "files": files, "seconds": round(time.perf_counter() - start, 3),
            "host": socket.gethostname()}


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
    when the grid does not fit the notebook or the folder holds another sweep.
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
    with _locked(sweep.folder):
        sweep.prepare(force)
        return _execute(sweep, scheduler, workers, progress)


@contextlib.contextmanager
def _locked(folder: Path):
    """One sweep process per folder; a lock left by a dead process on this host is taken over."""
    folder.mkdir(parents=True, exist_ok=True)
    path, me = folder / LOCK_FILE, f"{os.getpid()} {socket.gethostname()}"
    try:
        with open(path, "x") as f:
            f.write(me)
    except FileExistsError:
        pid, _, host = path.read_text().partition(" ")
        if host != socket.gethostname() or _alive(int(pid)):
            raise RuntimeError(f"another fpwb sweep (pid {pid} on {host}) is running in {folder}; "
                               f"if it is gone, delete {path}") from None
        path.write_text(me)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        pass
    return True


def _execute(sweep: Sweep, scheduler, workers, progress) -> SweepResult:
    start = time.perf_counter()
    created = (_read_json(sweep.folder / SWEEP_FILE) or {}).get("created", _now())
    todo = [run for run in sweep.runs if not sweep.completed(run)]
    n = workers or os.cpu_count() or 1
    where = scheduler or f"LocalCluster, {n} worker{'s' * (n > 1)}"
    _write_summary(sweep, created, where, 0.0, final=False)  # workers find sweep_id here
    executed = 0
    try:
        if todo:
            executed = _dispatch(sweep, todo, scheduler, n, progress)
    finally:  # also on Ctrl-C: the table and sweep.json show what is done
        wall = round(time.perf_counter() - start, 3)
        rows, table, figure, status = _write_summary(sweep, created, where, wall, final=True)
    return SweepResult(sweep.folder, rows, executed, len(sweep.runs) - len(todo), wall, table,
                       figure, status)


def _dispatch(sweep: Sweep, todo: list, scheduler, n: int, progress: bool) -> int:
    """Submit ``todo`` to the cluster and record each run as it completes; returns how many ran."""
    from distributed import Client, LocalCluster, as_completed  # slow to import
    from tqdm.auto import tqdm

    notebook_json = nbformat.writes(sweep.node)
    with contextlib.ExitStack() as stack:
        cluster = None
        if scheduler is None:
            cluster = stack.enter_context(LocalCluster(n_workers=n, threads_per_worker=1, processes=True))
        client = stack.enter_context(Client(cluster or scheduler))
        futures = {}
        for run in todo:
            folder = sweep.run_folder(run)
            if folder.exists():  # a failed or interrupted attempt: start clean
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            (folder / "parameters.yaml").write_text(yaml.safe_dump(run.parameters, sort_keys=False))
            future = client.submit(execute_run, notebook_json, sweep.notebook.name, run.parameters,
                                   str(folder.resolve()), sweep.sweep_id, pure=False,
                                   key=f"fpwb-sweep-{sweep.sweep_id}-{run.name}")
            futures[future] = run
        failures = 0
        with tqdm(total=len(sweep.runs), initial=len(sweep.runs) - len(todo), unit="run",
                  desc=sweep.name, disable=not progress) as bar:
            for future in as_completed(futures):
                report = _report(future)
                failures += report["error"] is not None
                _record(sweep, futures[future], report)
                bar.update()
                bar.set_postfix(failed=failures)
    return len(futures)


def _report(future) -> dict:
    """The run's report, or a failure report when Dask lost it (worker killed, cancelled)."""
    try:
        return future.result()
    except Exception as exc:
        return {"error": {"type": type(exc).__name__, "message": str(exc)}, "files": {},
                "seconds": None, "host": None}


def _record(sweep: Sweep, run: Run, report: dict):
    folder = sweep.run_folder(run)
    for name, data in report["files"].items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    _write_json(folder / "run.json", {
        "run": run.name, "sweep_id": sweep.sweep_id,
        "status": "ok" if report["error"] is None else "failed",
        "error": report["error"], "values": run.values, "parameters": run.parameters,
        "notebook": sweep.notebook.name, "seconds": report["seconds"], "host": report["host"],
        "finished": _now()})


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _flatten(data, prefix="") -> dict:
    """Nested mappings to dotted keys; lists become JSON text so every value fits one CSV cell."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list) else value
    return out


def collect(sweep: Sweep) -> list[dict]:
    """One row per run of the grid: name, status, parameters, results, seconds, error."""
    rows = []
    for run in sweep.runs:
        folder = sweep.run_folder(run)
        record = _read_json(folder / "run.json") or {}
        if record.get("sweep_id") != sweep.sweep_id:
            record = {}
        status = record.get("status", "pending")
        row = {"run": run.name, "status": status, **run.values, **sweep.grid.fixed}
        results = _read_json(folder / RESULTS_FILE) if status == "ok" else None
        for key, value in _flatten(results if isinstance(results, dict) else {}).items():
            row[f"result.{key}" if key in row else key] = value
        error = record.get("error")
        row["seconds"] = record.get("seconds")
        row["error"] = f"{error['type']}: {error['message']}" if error else ""
        rows.append(row)
    return rows


def _write_table(rows: list[dict], path: Path):
    columns = list(dict.fromkeys(k for row in rows for k in row if k not in ("seconds", "error")))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=[*columns, "seconds", "error"])
        writer.writeheader()
        writer.writerows(rows)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def pick_metric(sweep: Sweep, rows: list[dict]) -> str | None:
    """The grid's ``metric``, else the first numeric results entry of a completed run."""
    if sweep.grid.metric:
        return sweep.grid.metric
    skip = {"run", "status", "seconds", "error", *sweep.grid.grid, *sweep.grid.fixed}
    for row in rows:
        for key, value in row.items():
            if key not in skip and _is_number(value):
                return key
    return None


def draw_summary(sweep: Sweep, rows: list[dict], metric: str, path: Path):
    """The metric over the grid: a line for one swept parameter, a heat map for two or more
    (the first two, averaged over the others); failed runs show as gaps."""
    swept = [k for k, v in sweep.grid.grid.items() if len(v) > 1] or list(sweep.grid.grid)[:1]
    value = {r["run"]: (r[metric] if _is_number(r.get(metric)) else math.nan) for r in rows}
    failed = sum(r["status"] != "ok" for r in rows)
    title = f"{sweep.name}: {metric}" + (f" ({failed} of {len(rows)} runs missing)" if failed else "")
    if len(swept) == 1:
        (x,) = swept
        labels = [_label(v) for v in sweep.grid.grid[x]]
        means = [_mean([value[run.name] for run in sweep.runs if _label(run.values[x]) == label])
                 for label in labels]
        fig = Figure(figsize=(5, 3.5))
        ax = fig.subplots()
        ax.plot(range(len(labels)), means, "o-")
        ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel(x)
        ax.set_ylabel(metric)
    else:
        x, y = swept[:2]
        xs, ys = [_label(v) for v in sweep.grid.grid[x]], [_label(v) for v in sweep.grid.grid[y]]
        cells = [[_mean([value[run.name] for run in sweep.runs
                         if _label(run.values[x]) == a and _label(run.values[y]) == b]) for a in xs]
                 for b in ys]
        fig = Figure(figsize=(1.2 * len(xs) + 2.5, 0.8 * len(ys) + 2))
        ax = fig.subplots()
        image = ax.imshow(cells, origin="lower", aspect="auto", cmap="viridis")
        for j, line in enumerate(cells):
            for i, cell in enumerate(line):
                dark = math.isnan(cell) or image.norm(cell) < 0.5
                ax.text(i, j, "n/a" if math.isnan(cell) else f"{cell:.3g}", ha="center",
                        va="center", color="white" if dark else "black", fontsize=8)
        ax.set_xticks(range(len(xs)), xs)
        ax.set_yticks(range(len(ys)), ys)
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        fig.colorbar(image, ax=ax, label=metric)
        if len(swept) > 2:
            title += f"\n(mean over {', '.join(swept[2:])})"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _mean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def _write_summary(sweep: Sweep, created: str, where: str, wall: float, final: bool):
    """Write results.csv, summary.png and sweep.json from what is on disk now.

    Status: ``running`` while not final, then ``interrupted`` if runs are pending, ``failed`` if
    any failed, else ``complete``.
    """
    rows = collect(sweep)
    table = sweep.folder / TABLE_FILE
    _write_table(rows, table)
    metric = pick_metric(sweep, rows)
    figure = None
    if metric and any(_is_number(r.get(metric)) for r in rows):
        figure = sweep.folder / FIGURE_FILE
        draw_summary(sweep, rows, metric, figure)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "failed", "pending")}
    status = ("running" if not final else "interrupted" if counts["pending"]
              else "failed" if counts["failed"] else "complete")
    _write_json(sweep.folder / SWEEP_FILE, {
        "kind": "fpwb-sweep", "name": sweep.name, "sweep_id": sweep.sweep_id,
        "notebook": str(sweep.notebook), "notebook_copy": NOTEBOOK_COPY,
        "notebook_hash": sweep.notebook_hash,
        "grid": sweep.grid.grid, "fixed": sweep.grid.fixed, "metric": metric, "status": status,
        "n_runs": len(rows), "n_ok": counts["ok"], "n_failed": counts["failed"],
        "n_pending": counts["pending"],
        "failed": [{"run": r["run"], "error": r["error"],
                    "notebook": f"runs/{r['run']}/{sweep.notebook.name}"}
                   for r in rows if r["status"] == "failed"],
        "table": TABLE_FILE, "figure": FIGURE_FILE if figure else None,
        "cluster": where, "wall_time_s": wall, "created": created, "updated": _now()})
    return rows, table, figure, status


def add_sweep_command(subparsers) -> argparse.ArgumentParser:
    """Register ``sweep`` on an argparse subparsers object; the command is ``args.run(args)``."""
    parser = subparsers.add_parser(
        "sweep", help="run a notebook over a parameter grid on Dask",
        description="Run NOTEBOOK once per point of the grid through papermill on Dask "
                    "distributed. Running it again skips completed runs. Exit status: 0 all runs "
                    "ok, 1 a run failed, 2 bad input, 130 interrupted.")
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
    except KeyboardInterrupt:
        print("fpwb sweep: interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
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
