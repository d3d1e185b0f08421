"""Throughput of this checkout's layers against another git revision's, side by side in one process.

The other revision's package is exported with ``git archive`` into a temporary folder and imported
as ``fpwb_other``; both run the plain rule on the cases of ``benchmarks/layers.py`` (FpLinear
784 -> 1000 on the upstream and dense schedules, FpConv2d 1 -> 16, 5x5), interleaved pair by pair
(the order alternating every round) so that a slow spell of the machine hits both alike; the
fastest of ``--repeats`` runs of each is kept. Every case is warmed up first (kernels compiled or
loaded from numba's cache outside the timed runs).

    python benchmarks/compare_revisions.py --against 4cee163 [--repeats 5] [--out FILE]
"""
import argparse
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from layers import SCHEDULES, images  # noqa: E402


def export(revision: str, folder: Path) -> None:
    """The revision's ``fpwb`` package as ``folder/fpwb_other`` (its relative imports keep working)."""
    archive = folder / "other.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", "-o", str(archive), revision, "fpwb"],
                   check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    (folder / "fpwb").rename(folder / "fpwb_other")


def cases(lib, X):
    flat = X.flatten(1)
    made = {}
    for schedule, kwargs in SCHEDULES.items():
        for mode in ("sequential", "batch"):
            made[f"FpLinear {mode} {schedule}"] = (
                lambda kw=kwargs, m=mode: lib.FpLinear(784, 1000, seed=0, mode=m, **kw), flat)
    for mode in ("sequential", "batch"):
        made[f"FpConv2d {mode}"] = (lambda m=mode: lib.FpConv2d(1, 16, 5, padding=2, w_boost=0.01, t_decay=0.001,
                                                                seed=0, mode=m), X[:5000])
    return made


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="git revision to compare with (e.g. HEAD~1)")
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        export(args.against, Path(tmp))
        sys.path.insert(0, tmp)
        import fpwb
        import fpwb_other

        X, name = images(args.samples)
        libs = {"other": cases(fpwb_other, X), "this": cases(fpwb, X)}
        for made in libs.values():  # warm every kernel up, firings included
            for make, data in made.values():
                make()(data[: min(len(data), 8000)])
        best = {(case, side): float("inf") for side in libs for case in libs[side]}
        for round_ in range(args.repeats):
            for case in libs["this"]:
                for side in (("other", "this") if round_ % 2 == 0 else ("this", "other")):
                    make, data = libs[side][case]
                    layer = make()
                    start = time.perf_counter()
                    layer(data)
                    best[(case, side)] = min(best[(case, side)], time.perf_counter() - start)
    lines = [f"This checkout against {args.against}: {name}, plain rule, samples (images) per second, "
             f"fastest of {args.repeats} interleaved runs; torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads",
             f"{'case':<28}{args.against:>12}{'this':>12}{'this/other':>12}"]
    for case, (_, data) in libs["this"].items():
        other, this = best[(case, "other")], best[(case, "this")]
        lines.append(f"{case:<28}{len(data) / other:>12,.0f}{len(data) / this:>12,.0f}{other / this:>12.2f}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
