"""Run the notebooks through papermill into a report: executed notebooks, HTML pages and an index.

Layout of a report folder (``reports/`` by default)::

    index.html                  every notebook: parameters, wall time, status, headline numbers
    <name>/<name>.ipynb         the executed notebook (kept, partly executed, when it fails)
    <name>/<name>.html          its HTML rendering
    <name>/run.json             parameters, status, wall time and error of the run
    <name>/results.json, *.png  what the notebook wrote into its ``out_dir``
    sweeps/<sweep>/sweep.json   sweeps run with ``fpwb sweep --out <report>/sweeps/...`` (listed too)

Notebooks run with the working directory at the repository root and ``out_dir`` set to their
folder. A parameter a notebook does not declare is an error, raised before anything runs. The
index lists every notebook folder in the report, so running one notebook again updates its row
and keeps the others.
"""
from __future__ import annotations

import ast
import html
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import papermill
from nbconvert import HTMLExporter

from .experiments import repo_root

#: Parameters the report runner sets itself.
RUNNER_PARAMETERS = ("out_dir",)


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


def declared_parameters(path) -> dict:
    """The parameters a notebook declares in its cell tagged ``parameters``, with their defaults."""
    params = papermill.inspect_notebook(str(path))
    if not params:
        raise ValueError(f"{Path(path).name} has no cell tagged 'parameters'")
    defaults = {}
    for name, info in params.items():
        try:
            defaults[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            defaults[name] = info["default"]
    return defaults


def _coerce(notebook: str, name: str, value, default):
    """A command-line string converted to the type of the parameter's default."""
    if not isinstance(value, str) or isinstance(default, str):
        return value
    try:
        if isinstance(default, bool):
            flag = value.strip().lower()
            if flag not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(flag)
            return flag in ("true", "1", "yes")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        if default is None:
            return value
        raise ValueError(f"parameter {name} of {notebook} expects a {type(default).__name__} "
                         f"(default {default!r}), got {value!r}") from None


def resolve_parameters(path, given: dict) -> dict:
    """The notebook's defaults overlaid with ``given``; a ValueError for any undeclared name."""
    path = Path(path)
    defaults = declared_parameters(path)
    for name in RUNNER_PARAMETERS:
        if name not in defaults:
            raise ValueError(f"{path.name} declares no {name!r} parameter; the report runner needs it")
        if name in given:
            raise ValueError(f"{name} is set by the report runner (use --out for the report folder)")
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"{path.name} does not declare parameter(s) {', '.join(unknown)}; "
                         f"it declares: {', '.join(defaults)}")
    return {**defaults, **{k: _coerce(path.stem, k, v, defaults[k]) for k, v in given.items()}}


def _failure_message(name: str, error: Exception) -> str:
    if isinstance(error, papermill.PapermillExecutionError):
        first_line = next((line for line in error.source.splitlines() if line.strip()), "")
        return (f"{name} failed in cell In [{error.exec_count}] ({first_line.strip()!r}): "
                f"{error.ename}: {error.evalue}")
    return f"{name} failed: {type(error).__name__}: {error}"


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
    """Execute one notebook into ``out_dir/<name>/`` with resolved ``parameters``; never raises
    for errors inside the notebook (they are recorded in the returned run)."""
    path = Path(path)
    folder = Path(out_dir).resolve() / path.stem
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    run = NotebookRun(path.stem, {**parameters, "out_dir": str(folder)},
                      notebook=folder / path.name)
    start = time.perf_counter()
    try:
        papermill.execute_notebook(str(path), str(run.notebook), parameters=run.parameters,
                                   cwd=str(repo_root()), kernel_name="python3",
                                   progress_bar={"desc": label or path.stem} if progress else False)
        run.status = "ok"
    except Exception as error:  # any failure of this notebook; the others still run
        run.status, run.error = "failed", _failure_message(path.stem, error)
    run.wall_time = time.perf_counter() - start
    results = folder / "results.json"
    if results.is_file():
        run.results = json.loads(results.read_text())
    if run.notebook.is_file():
        run.html = render_html(run.notebook, hide_code)
    (folder / "run.json").write_text(json.dumps(
        {"name": run.name, "parameters": run.parameters, "status": run.status,
         "wall_time": run.wall_time, "error": run.error}, indent=2) + "\n")
    return run


def load_run(folder) -> NotebookRun:
    """A NotebookRun read back from a notebook folder of a report (its run.json)."""
    folder = Path(folder)
    record = json.loads((folder / "run.json").read_text())
    results = folder / "results.json"
    notebook, page = folder / f"{folder.name}.ipynb", folder / f"{folder.name}.html"
    return NotebookRun(record["name"], record["parameters"], record["status"], record["wall_time"],
                       notebook if notebook.is_file() else None, page if page.is_file() else None,
                       json.loads(results.read_text()) if results.is_file() else {}, record["error"])


def run_report(names=(), parameters=None, out_dir="reports", *, hide_code=False,
               progress=True) -> list[NotebookRun]:
    """Run the named notebooks (all by default) with ``parameters`` overriding their defaults,
    then write ``out_dir/index.html``. Every parameter must be declared by every notebook run;
    that is checked before the first notebook starts."""
    paths = find_notebooks(names)
    resolved = [resolve_parameters(p, dict(parameters or {})) for p in paths]
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for i, (path, params) in enumerate(zip(paths, resolved), 1):
        runs.append(run_notebook(path, out_dir, params, hide_code=hide_code, progress=progress,
                                 label=f"[{i}/{len(paths)}] {path.stem}"))
    write_index(out_dir)
    return runs


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
        sweep = json.loads(path.read_text())
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
    runs = [load_run(p.parent) for p in sorted(out_dir.glob("*/run.json"))]
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
               f"index written {time.strftime('%Y-%m-%d %H:%M:%S')}")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>fpwb report</title>"
            f"<style>{INDEX_STYLE}</style></head><body><h1>fpwb report</h1><p>{summary}</p>"
            f"<table class='runs'><thead><tr><th>Notebook</th><th>Status</th><th>Wall time</th>"
            f"<th>Parameters</th><th>Headline</th><th>Key figure</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>{_sweep_rows(out_dir)}</body></html>\n")
    path = out_dir / "index.html"
    path.write_text(page, encoding="utf-8")
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
