"""Throughput of the Frontprop layers on real images, side by side in one run.

FpLinear(784 -> 1000) over 20,000 images: the per-sample reference loop (lean: one matrix-vector
product per sample, no checks), ``sequential`` (exact), ``batch`` and a plain ``x @ W.T`` (the
floor no learning rule can beat), on two schedules: the upstream one (nothing fires for the first
~17,000 samples) and a dense one (most samples fire several neurons); the dense schedule again
with the lateral-inhibition and Oja switches on. Then FpConv2d (16 kernels
5x5, padding 2, 28x28 images) in both modes. Fashion-MNIST when its files are found, else
scikit-learn's digits resized to 28x28.

    python benchmarks/layers.py [--samples 20000] [--repeats 3] [--out benchmarks/results/layers.txt]
"""
import argparse
import time

import torch
import torch.nn.functional as F

from fpwb import FpConv2d, FpLinear
from fpwb.data import DatasetNotFoundError, load

SCHEDULES = {"upstream": dict(w_boost=0.01, t_decay=0.0001), "dense": dict(w_boost=0.01, t_decay=0.001)}
SWITCHES = {"k_winners=5": dict(k_winners=5), "rule='oja'": dict(rule="oja"),
            "k_winners=5, repulsion=0.02": dict(k_winners=5, repulsion=0.02)}


def images(n: int):
    """(n, 1, 28, 28) float32 images and the data set's name."""
    try:
        X, _ = load("fashion_mnist", download=False)
        name = "Fashion-MNIST"
    except DatasetNotFoundError:
        X, _ = load("digits")
        X = F.interpolate(X, size=(28, 28), mode="bilinear", align_corners=False)
        name = "digits resized to 28x28"
    X = X.repeat((n + len(X) - 1) // len(X), 1, 1, 1)[:n]
    return X, name


def reference_loop(weight, threshold, X, w_boost, t_decay):
    """The rule sample by sample: what the layer would do without the vectorised solver."""
    W, t, r = weight.clone(), threshold.clone(), 1.0 - t_decay
    for x in X / X.norm(dim=1, keepdim=True):
        y = W @ x
        fired = y >= t
        if fired.any():
            w = W[fired]
            w += w_boost * (x - w)
            W[fired] = w / w.norm(dim=1, keepdim=True)
            t[fired] = y[fired]
        t *= r


def fastest(cases: dict, repeats: int) -> dict:
    """Seconds each case takes, the fastest of ``repeats`` runs. A case is (prepare, run):
    ``run(prepare())``, only run timed (a fresh layer is built untimed, as the reference loop gets
    its start weights). The cases run interleaved, round by round, so that a slow spell of the
    shared machine hits them alike."""
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(repeats):
        for name, (prepare, run) in cases.items():
            prepared = prepare()
            start = time.perf_counter()
            run(prepared)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def nothing():
    return None


def feed(layer, X, batch: int = 1000):
    """Forward X in data-loader sized batches (what is timed: nothing else per batch)."""
    for x in X.split(batch):
        layer(x)


def fired_per_sample(layer, X, batch: int = 1000):
    """Forward X like ``feed``; returns how many neurons fired for each sample."""
    return torch.cat([(layer(x) > 0).sum(1) for x in X.split(batch)]).float()


def linear_cases(X, schedule: dict) -> dict:
    """The four FpLinear cases of one schedule, each from the same start state (seed 0)."""
    D = X.shape[1]
    start = FpLinear(D, 1000, seed=0, **schedule)
    return {"reference": (nothing, lambda _: reference_loop(start.weight, start.threshold, X, **schedule)),
            "sequential": (lambda: FpLinear(D, 1000, seed=0, **schedule), lambda layer: feed(layer, X)),
            "batch": (lambda: FpLinear(D, 1000, seed=0, mode="batch", **schedule),
                      lambda layer: feed(layer, X)),
            "floor": (nothing, lambda _: [F.normalize(x, dim=1) @ start.weight.T for x in X.split(1000)])}


def linear_rows(X, repeats):
    cases = {(name, case): run for name, schedule in SCHEDULES.items()
             for case, run in linear_cases(X, schedule).items()}
    seconds = fastest(cases, repeats)
    rows = []
    for name, schedule in SCHEDULES.items():
        fired = fired_per_sample(FpLinear(X.shape[1], 1000, seed=0, **schedule), X)
        fired_batch = fired_per_sample(FpLinear(X.shape[1], 1000, seed=0, mode="batch", **schedule), X)
        silent = int((fired.cumsum(0) == 0).sum())
        after = [float(f[silent:].mean()) if silent < len(X) else 0.0 for f in (fired, fired_batch)]
        rate = {case: len(X) / seconds[name, case] for case in ("reference", "sequential", "batch", "floor")}
        rows.append((name, rate["reference"], rate["sequential"], rate["batch"], rate["floor"],
                     silent, *after))
    return rows


def switch_rows(X, repeats):
    """Sequential and batch samples/s on the dense schedule with the switches on (and off)."""
    def make(mode, switches):
        return (lambda: FpLinear(X.shape[1], 1000, seed=0, mode=mode, **SCHEDULES["dense"], **switches),
                lambda layer: feed(layer, X))
    configs = {"plain rule": {}, **SWITCHES}
    seconds = fastest({(name, mode): make(mode, switches) for name, switches in configs.items()
                       for mode in ("sequential", "batch")}, repeats)
    return [(name, len(X) / seconds[name, "sequential"], len(X) / seconds[name, "batch"])
            for name in configs]


def conv_rows(X, n_seq: int, n_batch: int, repeats):
    def make(mode, n):
        return (lambda: FpConv2d(1, 16, 5, padding=2, seed=0, mode=mode),
                lambda layer: feed(layer, X[:n], batch=250))
    sizes = {"sequential": n_seq, "batch": n_batch}
    seconds = fastest({mode: make(mode, n) for mode, n in sizes.items()}, repeats)
    return [(mode, n / seconds[mode]) for mode, n in sizes.items()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--conv-samples", type=int, default=5_000)
    parser.add_argument("--switch-samples", type=int, default=5_000)
    parser.add_argument("--repeats", type=int, default=3,
                        help="time each case this many times (interleaved) and keep the fastest run")
    parser.add_argument("--out", help="also write the printed figures to this file")
    args = parser.parse_args(argv)

    X, name = images(args.samples)
    for mode in ("sequential", "batch"):  # compile the kernels and warm the allocator, untimed
        for switches in ({}, *SWITCHES.values()):
            FpLinear(784, 1000, mode=mode, **SCHEDULES["dense"], **switches)(X[:3000].flatten(1))
        FpConv2d(1, 16, 5, padding=2, mode=mode)(X[:50])
    lines = [f"Data: {name}, {args.samples} samples; torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads; each figure the fastest of {args.repeats} interleaved runs", "",
             "FpLinear 784 -> 1000, samples/s (ratios in brackets)",
             f"{'schedule':<10}{'reference':>12}{'sequential':>22}{'batch':>22}{'x @ W.T':>23}"
             f"{'silent start':>14}{'fired/sample after: seq':>25}{'batch':>7}"]
    for sched, ref, seq, bat, floor, silent, fired, fired_batch in linear_rows(X.flatten(1), args.repeats):
        lines.append(f"{sched:<10}{ref:>12,.0f}{seq:>12,.0f} ({seq / ref:>4.1f}x ref)"
                     f"{bat:>12,.0f} ({bat / floor:.2f}x floor){floor:>12,.0f} ({floor / ref:>4.1f}x ref)"
                     f"{silent:>14,}"
                     f"{fired:>25.1f}{fired_batch:>7.1f}")
    lines += ["", f"FpLinear 784 -> 1000, dense schedule, first {args.switch_samples} samples, with the "
              f"switches on, samples/s", f"{'switches':<30}{'sequential':>12}{'batch':>12}"]
    for name, seq, bat in switch_rows(X[:args.switch_samples].flatten(1), args.repeats):
        lines.append(f"{name:<30}{seq:>12,.0f}{bat:>12,.0f}")
    lines += ["", "FpConv2d 1 -> 16, 5x5, padding 2, 28x28 images, images/s"]
    for mode, rate in conv_rows(X, args.conv_samples // 2, args.conv_samples, args.repeats):
        lines.append(f"{mode:<12}{rate:>10,.0f}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
