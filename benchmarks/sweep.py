"""Sweep runner scaling: the same 8-run sweep on a LocalCluster of 1 worker, then of 2 workers.

Each run is a notebook that trains an FpLinear layer (batch mode, one thread) on a fixed random
stream, a few seconds of CPU. Wall time is the whole ``run_sweep`` call as a user sees it: cluster
start, 8 kernel starts and executions, table and figure. Prints a table and writes it to
benchmarks/results/sweep.txt.

    .venv/bin/python benchmarks/sweep.py [--samples 200000] [--workers 1 2]
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import nbformat

from fpwb.runs.sweep import run_sweep

RESULTS = Path(__file__).parent / "results" / "sweep.txt"
GRID = {"grid": {"w_boost": [0.01, 0.02, 0.05, 0.1], "seed": [0, 1]},
        "fixed": {"smoke": False}, "metric": "fire_rate"}

PARAMETERS = """seed = 0
w_boost = 0.02
n_neurons = 256
samples = 200000
smoke = False
out_dir = "."
"""

BODY = """import json, os, time
import torch
from fpwb import FpLinear

start = time.process_time()
n = 2000 if smoke else samples
x = torch.rand(n, 49, generator=torch.Generator().manual_seed(seed))
layer = FpLinear(49, n_neurons, w_boost=w_boost, mode="batch", seed=seed)
for i in range(0, n, 500):
    layer(x[i:i + 500])
results = {"fire_rate": layer.fire_count.sum().item() / (n * n_neurons),
           "cpu_seconds": time.process_time() - start}
with open(os.path.join(out_dir, "results.json"), "w") as f:
    json.dump(results, f)
"""


def write_notebook(path: Path, samples: int):
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell(PARAMETERS.replace("200000", str(samples)),
                                          metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(BODY)]
    nbformat.write(nb, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200_000, help="training samples per run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    lines = [f"fpwb sweep benchmark: 8 runs ({' x '.join(GRID['grid'])}), FpLinear(49, 256) batch mode, "
             f"{args.samples} samples per run",
             f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"load average before: {os.getloadavg()[0]:.1f}",
             "",
             f"{'workers':>7}  {'wall s':>7}  {'runs s':>7}  {'cpu s':>6}  {'speed-up':>8}  "
             f"{'efficiency':>10}  {'load':>5}"]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory(prefix="fpwb-bench-") as tmp:
        notebook = Path(tmp, "bench.ipynb")
        write_notebook(notebook, args.samples)
        base = None
        for workers in args.workers:
            start = time.perf_counter()
            result = run_sweep(notebook, GRID, Path(tmp, f"w{workers}"), workers=workers, progress=False)
            wall = time.perf_counter() - start
            if not result.ok:
                raise SystemExit(f"benchmark sweep failed: {result.failed}")
            runs = sum(float(r["seconds"]) for r in result.rows)
            cpu = sum(float(r["cpu_seconds"]) for r in result.rows)
            if base is None:
                base, base_workers = wall, workers
            speedup = base / wall
            efficiency = speedup * base_workers / workers
            line = (f"{workers:>7}  {wall:>7.1f}  {runs:>7.1f}  {cpu:>6.1f}  {speedup:>7.2f}x  "
                    f"{efficiency:>10.0%}  {os.getloadavg()[0]:>5.1f}")
            print(line, flush=True)
            lines.append(line)
    lines += ["", "wall s: the whole run_sweep call (cluster start included); runs s: sum of the 8 "
                  "runs' own times (kernel start + execution); cpu s: sum of the training cells' CPU "
                  "time; speed-up: relative to the first row; load: 1-minute load average after the "
                  "row (other processes on the machine compete for the same cores)."]
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(lines[-1])


if __name__ == "__main__":
    main()
