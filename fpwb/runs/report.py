"""Run the notebooks through papermill into a report: executed notebooks, HTML pages and an index.

Layout of a report folder (``reports/`` by default)::

    index.html                  every notebook: parameters, wall time, status, headline numbers
    <name>/<name>.ipynb         the executed notebook (kept, partly executed, when it fails)
    <name>/<name>.html          its HTML rendering
    <name>/run.json             the run record (fpwb.runs.records): parameters, status, UTC times,
                                error, the files the run wrote
    <name>/results.json, *.png  what the notebook wrote into its ``out_dir``
    sweeps/<sweep>/sweep.json   sweeps run with ``fpwb sweep --out <report>/sweeps/...`` (listed too)

Notebooks run with the working directory at the repository root, into a fresh folder that
replaces ``<name>/`` only when the run is done (:mod:`fpwb.runs.records`): a failed run keeps
the previous good one (the failed attempt goes to ``.fpwb-failed/<name>/``), files a user put in
``<name>/`` are carried over, and a ``<name>/`` folder that fpwb did not write is refused. A
parameter a notebook does not declare, an ``--out`` that cannot be written, or such a folder is an
error raised before anything runs. The index lists every notebook folder in the report, so
running one notebook again updates its row and keeps the others.
"""
from __future__ import annotations

import html
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter

from . import records
from .experiments import repo_root
from .notebook import OUT_PARAM, Parameters, describe_error
from .notebook import run_notebook as run_notebook_into

#: Parameters the report runner sets itself.
RUNNER_PARAMETERS = (OUT_PARAM,)
#: The runner's name in run records and in the kernels' FPWB_RUNNER.
RUNNER = "report"
#: Seconds a notebook is assumed to take when no earlier run of it is on record: full runs
#: (the default parameters) and smoke runs.
DEFAULT_SECONDS = {"full": 120.0, "smoke": 15.0}


@dataclass
class NotebookRun:
    """The outcome of one notebook in a report."""
    name: str
    parameters: dict
    status: str = "not run"  # "ok" or "failed" once run
    wall_time: float = 0.0
    notebook: Path | None = None
    html: Path | None = None
    results: dict = field(default_factory=dict)
    error: str | None = None
    #: Where a failed run went when the previous good run was kept (None otherwise).
    kept: Path | None = None

    @property
    def headline(self) -> dict:
        return self.results.get("headline", {})


def notebook_dir() -> Path:
    return repo_root() / "notebooks"


def find_notebooks(names=()) -> list[Path]:
    """Notebook paths from names: a path, a name in notebooks/ ("00_quickstart") or the unique
    start of one ("00"); all notebooks by default."""
    if not names:
        found = sorted(notebook_dir().glob("*.ipynb"))
        if not found:
            raise ValueError(f"no notebooks in {notebook_dir()}")
        return found
    known = sorted(notebook_dir().glob("*.ipynb"))
    paths = []
    for name in names:
        path = Path(name)
        if not path.is_file():
            stem = path.name.removesuffix(".ipynb")
            matches = [p for p in known if p.stem == stem] or [p for p in known if p.stem.startswith(stem)]
            if len(matches) != 1:
                raise ValueError(f"no notebook {name!r}" + (" (ambiguous)" if matches else "")
                                 + f"; known notebooks: {', '.join(p.stem for p in known)}")
            path = matches[0]
        paths.append(path.resolve())
    return paths


def resolve_parameters(path, given: dict) -> dict:
    """The notebook's literal defaults overlaid with ``given``; a ValueError for any undeclared
    name, and for ``out_dir`` (the runner sets it)."""
    return Parameters.inspect(path).resolve(given, runner="report runner",
                                            hint="use --out for the report folder")


def render_html(notebook_path, hide_code: bool = False) -> Path:
    """Write the HTML rendering next to an executed notebook; ``hide_code`` keeps outputs only."""
    notebook_path = Path(notebook_path)
    exporter = HTMLExporter(template_name="lab", exclude_input=hide_code,
                            exclude_input_prompt=hide_code, exclude_output_prompt=hide_code)
    body, _ = exporter.from_notebook_node(nbformat.read(notebook_path, as_version=4),
                                          resources={"metadata": {"name": notebook_path.stem}})
    path = notebook_path.with_suffix(".html")
    path.write_text(body, encoding="utf-8")
    return path


def run_notebook(path, out_dir, parameters: dict, *, hide_code=False, progress=True,
                 label=None) -> NotebookRun:
    """Execute one notebook as the run in ``out_dir/<name>/`` with resolved ``parameters``.

    The run is written into a fresh folder and swapped in when done (a failure keeps a previous
    good run; see :mod:`fpwb.runs.records`). Never raises for errors inside the notebook (they
    are recorded in the returned run)."""
    path = Path(path)

    def render(staging, _):
        executed = staging / path.name
        if executed.is_file():
            render_html(executed, hide_code)

    record, where = run_notebook_into(path, Path(out_dir).resolve() / path.stem, parameters,
                                      runner=RUNNER, progress=(label or path.stem) if progress else None,
                                      finish=render)
    run = load_run(where)
    run.kept = where if where.name == path.stem and where.parent.name == records.FAILED_DIR else None
    return run


def load_run(folder) -> NotebookRun:
    """A NotebookRun read back from a notebook folder of a report (its run.json)."""
    folder = Path(folder)
    record = records.read_record(folder)
    if record is None:
        raise ValueError(f"{folder} holds no {records.RUN_FILE}")
    results = records.read_json(folder / "results.json")
    notebook, page = folder / f"{folder.name}.ipynb", folder / f"{folder.name}.html"
    error = record["error"]
    if isinstance(error, dict):
        error = describe_error(record["name"], error)
    return NotebookRun(record["name"], record["parameters"], record["status"], record["wall_time"],
                       notebook if notebook.is_file() else None, page if page.is_file() else None,
                       results if isinstance(results, dict) else {}, error)


def check_out(out_dir, paths=()) -> Path:
    """The report folder, created and checked writable, and each notebook's folder checked
    replaceable (a ValueError before anything runs, see :mod:`fpwb.runs.records`)."""
    out_dir = records.check_writable(Path(out_dir).resolve())
    for path in paths:
        records.check_replaceable(out_dir / Path(path).stem, inputs=[path])
    return out_dir


def estimate(paths, out_dir, parameters: dict) -> tuple[float, int]:
    """Seconds the notebooks will take, and how many of them that figure is measured for: the
    wall time of the run on record in ``out_dir`` with the same ``smoke`` setting, else
    :data:`DEFAULT_SECONDS`."""
    total, measured = 0.0, 0
    for path, params in zip(paths, parameters):
        record = records.read_record(Path(out_dir) / Path(path).stem)
        smoke = bool(params.get("smoke"))
        if record is not None and bool(record["parameters"].get("smoke")) == smoke:
            total, measured = total + float(record["wall_time"]), measured + 1
        else:
            total += DEFAULT_SECONDS["smoke" if smoke else "full"]
    return total, measured


def estimate_message(paths, out_dir, parameters: list) -> str:
    """How long the notebooks will take, and what that figure rests on (:func:`estimate`)."""
    seconds, measured = estimate(paths, out_dir, parameters)
    default = (f"{DEFAULT_SECONDS['full']:.0f} s per notebook (smoke: "
               f"{DEFAULT_SECONDS['smoke']:.0f} s)")
    if measured == len(paths):
        basis = f"the previous run's times of {measured} of them"
    elif measured:
        basis = (f"the previous run's times of {measured}, a default of {default} for the other "
                 f"{len(paths) - measured}")
    else:
        basis = f"a default of {default}; no earlier run on record"
    return f"{len(paths)} notebook(s), about {_duration(seconds)} (from {basis})"


def run_report(names=(), parameters=None, out_dir="reports", *, hide_code=False,
               progress=True, announce=None) -> list[NotebookRun]:
    """Run the named notebooks (all by default) with ``parameters`` overriding their defaults,
    then write ``out_dir/index.html``. Every parameter must be declared by every notebook run,
    ``out_dir`` must be writable, and no notebook's folder may hold what fpwb did not write: that
    is checked before the first notebook starts. ``announce(message)`` hears the time estimate."""
    paths = find_notebooks(names)
    resolved = [resolve_parameters(p, dict(parameters or {})) for p in paths]
    out_dir = check_out(out_dir, paths)
    if announce is not None:
        announce(estimate_message(paths, out_dir, resolved))
    runs = []
    for i, (path, params) in enumerate(zip(paths, resolved), 1):
        runs.append(run_notebook(path, out_dir, params, hide_code=hide_code, progress=progress,
                                 label=f"[{i}/{len(paths)}] {path.stem}"))
    write_index(out_dir)
    return runs


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


def _table(items: dict) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
                   for k, v in items.items())
    return f"<table class='kv'>{rows}</table>"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


INDEX_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table.runs { border-collapse: collapse; width: 100%; }
table.runs > tbody > tr > td, table.runs > thead > tr > th { border: 1px solid #ccc; padding: .5em;
  vertical-align: top; text-align: left; }
table.kv th { font-weight: normal; color: #555; padding-right: 1em; text-align: left; }
.ok { color: #1a7f37; font-weight: bold; } .failed { color: #c62828; font-weight: bold; }
img.key { max-width: 320px; max-height: 220px; }
pre { white-space: pre-wrap; max-width: 40em; }
"""


def _sweep_rows(out_dir: Path) -> str:
    """Index rows of the sweeps in out_dir/sweeps (their sweep.json, written by fpwb.runs.sweep); green
    only for a complete sweep (a running or interrupted one has no failures yet is not done)."""
    rows = []
    for path in sorted(out_dir.glob("sweeps/*/sweep.json")):
        sweep = records.read_json(path)
        if not isinstance(sweep, dict):
            continue
        where = path.parent.relative_to(out_dir).as_posix()
        figure = sweep.get("figure")
        image = f"<img class='key' src='{where}/{html.escape(figure)}' alt='summary'>" if figure else ""
        table = f"<a href='{where}/{html.escape(sweep.get('table', ''))}'>table</a>"
        grid = {k: ", ".join(map(_fmt, v)) for k, v in sweep.get("grid", {}).items()}
        rows.append(f"<tr><td><b>{html.escape(sweep.get('name', where))}</b><br>{table}</td>"
                    f"<td class='{'ok' if sweep.get('status') == 'complete' else 'failed'}'>"
                    f"{html.escape(str(sweep.get('status')))}: {sweep.get('n_ok')} of "
                    f"{sweep.get('n_runs')} runs ok</td><td>{sweep.get('wall_time_s') or 0:.1f} s</td>"
                    f"<td>{_table({**grid, **sweep.get('fixed', {})})}</td>"
                    f"<td>{html.escape(str(sweep.get('metric')))}</td><td>{image}</td></tr>")
    if not rows:
        return ""
    return ("<h2>Sweeps</h2><table class='runs'><thead><tr><th>Sweep</th><th>Status</th>"
            "<th>Wall time</th><th>Grid</th><th>Metric</th><th>Summary</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def write_index(out_dir) -> Path:
    """Write ``out_dir/index.html``: one row per notebook folder (its run.json), then the sweeps."""
    out_dir = Path(out_dir)
    runs = [load_run(p.parent) for p in sorted(out_dir.glob("*/run.json"))
            if records.read_record(p.parent) is not None]
    rows = []
    for run in runs:
        links = [f"<a href='{run.name}/{p.name}'>{p.suffix[1:]}</a>"
                 for p in (run.html, run.notebook) if p is not None]
        figure = run.results.get("key_figure")
        image = (f"<img class='key' src='{run.name}/{html.escape(figure)}' alt='{run.name} key figure'>"
                 if figure else "")
        error = f"<pre>{html.escape(run.error)}</pre>" if run.error else ""
        params = {k: v for k, v in run.parameters.items() if k not in RUNNER_PARAMETERS}
        rows.append(
            f"<tr id='{run.name}'><td><b>{html.escape(run.name)}</b><br>{' | '.join(links)}</td>"
            f"<td class='{run.status}'>{run.status}{error}</td><td>{run.wall_time:.1f} s</td>"
            f"<td>{_table(params)}</td><td>{_table(run.headline)}</td><td>{image}</td></tr>")
    total = sum(run.wall_time for run in runs)
    failed = sum(run.status != "ok" for run in runs)
    summary = (f"{len(runs)} notebook(s), {failed} failed, {total:.0f} s in all, "
               f"index written {records.now()}")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>fpwb report</title>"
            f"<style>{INDEX_STYLE}</style></head><body><h1>fpwb report</h1><p>{summary}</p>"
            f"<table class='runs'><thead><tr><th>Notebook</th><th>Status</th><th>Wall time</th>"
            f"<th>Parameters</th><th>Headline</th><th>Key figure</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>{_sweep_rows(out_dir)}</body></html>\n")
    path = out_dir / "index.html"
    records.write_text(path, page)
    return path


def copy_key_figures(report_dir="reports", dest="docs/figures") -> list[Path]:
    """Copy each notebook's key figure from a report to ``dest/<notebook>.png`` (for the README)."""
    report_dir, dest = Path(report_dir), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for results in sorted(report_dir.glob("*/results.json")):
        figure = json.loads(results.read_text()).get("key_figure")
        if figure:
            copied.append(Path(shutil.copyfile(results.parent / figure,
                                               dest / f"{results.parent.name}.png")))
    if not copied:
        raise ValueError(f"no key figures in {report_dir}; run `fpwb report` first")
    return copied
