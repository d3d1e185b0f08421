"""A sweep folder on disk: one sweep process at a time (the lock), reopening or resetting it, and
recording each run as it comes back from the cluster.

Layout: ``sweep.json``, ``results.csv``, ``summary.png`` (:mod:`fpwb.runs.tables`),
``notebook.ipynb`` (the copy the runs execute), ``.lock``, and ``runs/<name>/`` per grid point,
each a run folder of :mod:`fpwb.runs.records` (written aside, swapped in when recorded).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
from pathlib import Path

import nbformat
import yaml

from . import records
from .notebook import retarget
from .tables import FIGURE_FILE, NOTEBOOK_COPY, SWEEP_FILE, TABLE_FILE

LOCK_FILE = ".lock"
RUNS_DIR = "runs"
PARAMETERS_FILE = "parameters.yaml"


@contextlib.contextmanager
def locked(folder: Path):
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


def completed(sweep, run) -> bool:
    """True when the run finished without error in this sweep (its run.json says so)."""
    record = records.read_record(sweep.run_folder(run))
    return bool(record) and record["status"] == "ok" and record.get("sweep_id") == sweep.sweep_id


def prepare(sweep, force: bool = False):
    """Reopen the (existing) sweep folder under its lock; refuse one that holds another notebook
    or grid unless ``force``, which removes what that sweep wrote (see :func:`reset`). Staging
    folders left by a killed process are removed; the notebook copy is written."""
    folder = sweep.folder
    summary = records.read_json(folder / SWEEP_FILE)
    if summary is None and any(p.name != LOCK_FILE for p in folder.glob("*")):
        raise ValueError(f"{folder} exists and is not a sweep folder (no {SWEEP_FILE}); "
                         f"pass another --out")
    if summary is not None and summary.get("sweep_id") != sweep.sweep_id:
        if not force:
            changed = ("grid" if (summary.get("grid"), summary.get("fixed"))
                       != (sweep.grid.grid, sweep.grid.fixed) else "notebook code")
            raise ValueError(f"{folder} holds a sweep of another {changed} "
                             f"(sweep_id {summary.get('sweep_id')}, now {sweep.sweep_id}); pass a "
                             f"new --out to keep both, or --force to delete its results")
        reset(folder)
    shutil.rmtree(folder / RUNS_DIR / records.STAGING_DIR, ignore_errors=True)
    nbformat.write(sweep.node, folder / NOTEBOOK_COPY)


def reset(folder: Path) -> Path | None:
    """Remove what a sweep wrote in ``folder``: its tables, figure, notebook copy and the files
    each run's record lists. Files a user put among the runs are kept, moved to
    ``runs.kept-<time>/``, which is returned (None when there were none)."""
    for name in (TABLE_FILE, FIGURE_FILE, SWEEP_FILE, NOTEBOOK_COPY):
        (folder / name).unlink(missing_ok=True)
    runs = folder / RUNS_DIR
    if not runs.is_dir():
        return None
    for area in (records.STAGING_DIR, records.FAILED_DIR):
        shutil.rmtree(runs / area, ignore_errors=True)
    for run in sorted(p for p in runs.iterdir() if p.is_dir()):
        records.remove_run(run)
    records.prune(runs)
    if not runs.exists():
        return None
    kept = folder / f"{RUNS_DIR}.kept-{records.stamp()}"
    runs.replace(kept)
    return kept


def record(sweep, run, report: dict, *, extra=None) -> dict:
    """Write a run that came back from the cluster into its folder: the files a remote worker
    sent, ``parameters.yaml`` (``papermill notebook.ipynb OUT.ipynb -f parameters.yaml -p out_dir
    DIR --cwd REPO`` reruns it), whatever ``extra(staging, record)`` adds (TensorBoard events),
    and ``run.json``; then swap it in. Returns the record."""
    final = sweep.run_folder(run)
    staging = Path(report["staging"]) if report.get("staging") else records.staging_folder(final)
    try:
        for name, data in report["files"].items():
            path = staging / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        if report["out_dir"]:
            retarget(staging / sweep.notebook.name, report["out_dir"], final.resolve())
        (staging / PARAMETERS_FILE).write_text(yaml.safe_dump(run.parameters, sort_keys=False))
        error = report["error"]
        entry = records.run_record(
            name=run.name, notebook=sweep.notebook.name,
            parameters={**run.parameters, "out_dir": str(final.resolve())},
            status="ok" if error is None else "failed", error=error,
            started=report["started"], finished=report["finished"],
            wall_time=report["wall_time"] or 0.0, host=report["host"], sweep_id=sweep.sweep_id,
            values=run.values, files=records.files_of(staging))
        if extra is not None:
            extra(staging, entry)
            entry["files"] = sorted({*records.files_of(staging), records.RUN_FILE})
        records.write_json(staging / records.RUN_FILE, entry)
    except BaseException:
        records.discard(staging)
        raise
    records.publish(staging, final)
    return entry
