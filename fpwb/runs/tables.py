"""A sweep's results from what is on disk: one row per run (``results.csv``), the metric over the
grid (``summary.png``) and the sweep's entry for the report index (``sweep.json``)."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from matplotlib.figure import Figure

from . import records
from .grid import label

RESULTS_FILE = "results.json"
SWEEP_FILE = "sweep.json"
TABLE_FILE = "results.csv"
FIGURE_FILE = "summary.png"
NOTEBOOK_COPY = "notebook.ipynb"


def flatten(data, prefix="") -> dict:
    """Nested mappings to dotted keys; lists become JSON text so every value fits one CSV cell."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list) else value
    return out


def collect(sweep) -> list[dict]:
    """One row per run of the grid: name, status, parameters, results, seconds, error."""
    rows = []
    for run in sweep.runs:
        folder = sweep.run_folder(run)
        record = records.read_record(folder) or {}
        if record.get("sweep_id") != sweep.sweep_id:
            record = {}
        status = record.get("status", "pending")
        row = {"run": run.name, "status": status, **run.values, **sweep.grid.fixed}
        results = records.read_json(folder / RESULTS_FILE) if status == "ok" else None
        for key, value in flatten(results if isinstance(results, dict) else {}).items():
            row[f"result.{key}" if key in row else key] = value
        error = record.get("error")
        row["seconds"] = record.get("wall_time")
        row["error"] = f"{error['type']}: {error['message']}" if error else ""
        rows.append(row)
    return rows


def write_table(rows: list[dict], path: Path):
    columns = list(dict.fromkeys(k for row in rows for k in row if k not in ("seconds", "error")))
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=[*columns, "seconds", "error"])
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def pick_metric(sweep, rows: list[dict]) -> str | None:
    """The grid's ``metric``, else the first numeric results entry of a completed run."""
    if sweep.grid.metric:
        return sweep.grid.metric
    skip = {"run", "status", "seconds", "error", *sweep.grid.grid, *sweep.grid.fixed}
    for row in rows:
        for key, value in row.items():
            if key not in skip and is_number(value):
                return key
    return None


def draw_summary(sweep, rows: list[dict], metric: str, path: Path):
    """The metric over the grid: a line for one swept parameter, a heat map for two or more
    (the first two, averaged over the others); failed runs show as gaps."""
    swept = [k for k, v in sweep.grid.grid.items() if len(v) > 1] or list(sweep.grid.grid)[:1]
    value = {r["run"]: (r[metric] if is_number(r.get(metric)) else math.nan) for r in rows}
    failed = sum(r["status"] != "ok" for r in rows)
    title = f"{sweep.name}: {metric}" + (f" ({failed} of {len(rows)} runs missing)" if failed else "")
    if len(swept) == 1:
        (x,) = swept
        labels = [label(v) for v in sweep.grid.grid[x]]
        means = [_mean([value[run.name] for run in sweep.runs if label(run.values[x]) == name])
                 for name in labels]
        fig = Figure(figsize=(5, 3.5))
        ax = fig.subplots()
        ax.plot(range(len(labels)), means, "o-")
        ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel(x)
        ax.set_ylabel(metric)
    else:
        x, y = swept[:2]
        xs, ys = [label(v) for v in sweep.grid.grid[x]], [label(v) for v in sweep.grid.grid[y]]
        cells = [[_mean([value[run.name] for run in sweep.runs
                         if label(run.values[x]) == a and label(run.values[y]) == b]) for a in xs]
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


def write_summary(sweep, created: str, where: str, wall: float, final: bool):
    """Write results.csv, summary.png and sweep.json from what is on disk now.

    Status: ``running`` while not final, then ``interrupted`` if runs are pending, ``failed`` if
    any failed, else ``complete``.
    """
    rows = collect(sweep)
    table = sweep.folder / TABLE_FILE
    write_table(rows, table)
    metric = pick_metric(sweep, rows)
    figure = None
    if metric and any(is_number(r.get(metric)) for r in rows):
        figure = sweep.folder / FIGURE_FILE
        draw_summary(sweep, rows, metric, figure)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "failed", "pending")}
    status = ("running" if not final else "interrupted" if counts["pending"]
              else "failed" if counts["failed"] else "complete")
    records.write_json(sweep.folder / SWEEP_FILE, {
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
        "cluster": where, "wall_time_s": wall, "created": created, "updated": records.now()})
    return rows, table, figure, status
