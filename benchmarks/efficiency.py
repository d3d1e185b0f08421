"""Learning cost: a Frontprop stack (sequential and batch mode) against the same architecture trained
with backprop (forward + backward + Adam step), across widths. See fpwb.studies.efficiency for what is
measured and how (peak RSS rise per configuration in its own subprocess; counted state and saved
tensors).

    .venv/bin/python benchmarks/efficiency.py                      # widths 256 1024 4096, 2 layers
    .venv/bin/python benchmarks/efficiency.py --sizes 128 512 --samples 256

Writes benchmarks/results/efficiency.txt and efficiency.png (and efficiency.json).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform

import torch

from fpwb.studies import efficiency

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def ratios(rows) -> str:
    lines = []
    for size in sorted({r["widths"][0] for r in rows}):
        by = {r["mode"]: r for r in rows if r["widths"][0] == size}
        if "backprop" in by and "frontprop" in by:
            bp, fp = by["backprop"], by["frontprop"]
            lines.append(f"width {size}: backprop / frontprop (sequential): time x{bp['us_per_sample'] / fp['us_per_sample']:.2f} "
                         f"(slowest frontprop run / fastest backprop run x{bp['us_min'] / fp['us_max']:.2f}), "
                         f"peak memory x{bp['peak_mb'] / max(fp['peak_mb'], 1e-3):.2f}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (median, range)")
    parser.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS)
    args = parser.parse_args()
    rows = efficiency.compare(args.sizes, args.depth, n_samples=args.samples, batch_size=args.batch_size,
                              threads=args.threads, optimizer=args.optimizer, repeats=args.repeats,
                              progress=lambda r: print(efficiency.table([r]).splitlines()[1], flush=True))
    args.out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = "\n".join([
        f"Learning cost: {args.depth} layers of each width over 784 inputs, {args.samples} random samples "
        f"in batches of {args.batch_size}; backprop: bias-free Linear+ReLU layers + a 10-way head, "
        f"cross-entropy, {args.optimizer}",
        f"torch {torch.__version__}, {args.threads} thread(s) (torch and numba), {platform.machine()}, "
        f"us/sample: median of {args.repeats} runs, range min-max; "
        f"load average at the end {load:.1f} ({os.cpu_count()} cores; timings are wall clock)",
        "peak MB: rise of peak RSS from before the model was built (own subprocess per row); "
        "state MB: params/buffers + grads + optimiser state; saved MB: tensors autograd kept for backward; "
        "fired/sample: Frontprop firings per sample, all layers (its cost grows with them)",
        "", efficiency.table(rows), "", ratios(rows), ""])
    (args.out / "efficiency.txt").write_text(text)
    (args.out / "efficiency.json").write_text(json.dumps(rows, indent=1) + "\n")
    fig = efficiency.plot(rows)
    fig.savefig(args.out / "efficiency.png", dpi=110, bbox_inches="tight")
    print(text)


if __name__ == "__main__":
    main()
