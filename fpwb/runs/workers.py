"""Running a sweep's notebooks on Dask distributed: the task a worker executes, and the loop that
submits the runs and records each one as it completes."""
from __future__ import annotations

import contextlib
import socket
import tempfile
from pathlib import Path

import nbformat

from . import records
from .notebook import OUT_PARAM, execute
from .tables import NOTEBOOK_COPY, RESULTS_FILE, SWEEP_FILE

#: The runner's name in the kernels' FPWB_RUNNER.
RUNNER = "sweep"


def execute_run(notebook_json: str, notebook_name: str, parameters: dict, folder: str,
                sweep_id: str) -> dict:
    """Execute one run (on a Dask worker) and report it; notebook errors come back, never raise.

    A worker that sees the sweep folder (this machine, or a shared file system) executes into a
    staging folder beside the run's ``folder`` and reports its path; any other works in a
    temporary folder and sends its files back with the report.
    """
    sweep_folder = Path(folder).parents[1]
    shared = (records.read_json(sweep_folder / SWEEP_FILE) or {}).get("sweep_id") == sweep_id
    with tempfile.TemporaryDirectory(prefix="fpwb-run-") as tmp:
        if shared:
            work, source = records.staging_folder(Path(folder)), sweep_folder / NOTEBOOK_COPY
        else:
            work, source = Path(tmp, "out"), Path(tmp, NOTEBOOK_COPY)
            work.mkdir()
            source.write_text(notebook_json, encoding="utf-8")
        done = execute(source, work / notebook_name, {**parameters, OUT_PARAM: str(work.resolve())},
                       runner=RUNNER)
        error = done.error
        if error is None and not (work / RESULTS_FILE).is_file():
            error = {"type": "MissingResults", "cell": None, "source": None,
                     "message": f"the notebook wrote no {RESULTS_FILE} into {OUT_PARAM}"}
        files = {} if shared else {p: (work / p).read_bytes() for p in records.files_of(work)}
    return {"error": error, "files": files, "staging": str(work) if shared else None,
            "out_dir": str(work.resolve()),
            "started": done.started, "finished": done.finished, "wall_time": done.wall_time,
            "host": socket.gethostname()}


def lost(exc: BaseException) -> dict:
    """The report of a run Dask lost (worker killed, cancelled)."""
    stamp = records.now()
    return {"error": {"type": type(exc).__name__, "message": str(exc), "cell": None, "source": None},
            "files": {}, "staging": None, "out_dir": None, "started": stamp, "finished": stamp,
            "wall_time": 0.0, "host": None}


def dispatch(sweep, todo: list, scheduler, n: int, progress: bool, record) -> int:
    """Submit ``todo`` to the cluster (a LocalCluster of ``n`` one-thread processes, or the
    ``scheduler`` address) and ``record(run, report)`` each run as it completes; returns how many
    were recorded. On an interrupt the runs that finished meanwhile are recorded before the
    cluster is closed."""
    from distributed import Client, LocalCluster, as_completed  # slow to import
    from tqdm.auto import tqdm

    notebook_json = nbformat.writes(sweep.node)
    recorded = set()
    with contextlib.ExitStack() as stack:
        cluster = None
        if scheduler is None:
            cluster = stack.enter_context(LocalCluster(n_workers=n, threads_per_worker=1, processes=True))
        client = stack.enter_context(Client(cluster or scheduler))
        futures = {}
        for run in todo:
            future = client.submit(execute_run, notebook_json, sweep.notebook.name, run.parameters,
                                   str(sweep.run_folder(run).resolve()), sweep.sweep_id, pure=False,
                                   key=f"fpwb-sweep-{sweep.sweep_id}-{run.name}")
            futures[future] = run
        failures = 0
        try:
            with tqdm(total=len(sweep.runs), initial=len(sweep.runs) - len(todo), unit="run",
                      desc=sweep.name, disable=not progress) as bar:
                for future in as_completed(futures):
                    report = _report(future)
                    failures += report["error"] is not None
                    record(futures[future], report)
                    recorded.add(future)
                    bar.update()
                    bar.set_postfix(failed=failures)
        except KeyboardInterrupt:
            for future, run in futures.items():
                if future not in recorded and future.status == "finished":
                    record(run, future.result())
                    recorded.add(future)
            raise
    return len(recorded)


def _report(future) -> dict:
    """The run's report, or a failure report when Dask lost it."""
    try:
        return future.result()
    except Exception as exc:
        return lost(exc)
