"""Throughput of the Frontprop layers on real images, side by side in one run.

FpLinear(784 -> 1000) over 20,000 images: the per-sample reference loop (lean: one matrix-vector
product per sample, no checks), ``sequential`` (exact), ``batch`` and a plain ``x @ W.T`` (the
floor no learning rule can beat), on two schedules: the upstream one (nothing fires for the first
~17,000 samples) and a dense one (most samples fire several neurons); the dense schedule again
with the lateral-inhibition and Oja switches on; one-sample calls (the way an online learner is
fed). Then FpConv2d, a first layer (1 -> 64 kernels 5x5 on 28x28) and a deeper one (64 -> 128
kernels 3x3 on 14x14), in both modes on a sparse and a dense schedule, against F.conv2d with the
same kernels (the floor). Fashion-MNIST when its files are found, else scikit-learn's digits
resized to 28x28.

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


CONV_LAYERS = {"1 -> 64, 5x5, 28x28": dict(in_channels=1, out_channels=64, kernel_size=5, padding=2),
               "64 -> 128, 3x3, 14x14": dict(in_channels=64, out_channels=128, kernel_size=3, padding=1)}
CONV_SCHEDULES = {"sparse": dict(w_boost=0.02, t_decay=0.001), "dense": dict(w_boost=0.02, t_decay=0.003)}


def conv_inputs(X):
    """Each conv layer's input: the images, and for the deeper layer 64 maps of 14x14 (the images
    through 64 random 5x5 kernels, ReLU and 2x2 max-pooling, as a first stage would give)."""
    kernels = torch.randn(64, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    deeper = torch.cat([F.max_pool2d(F.relu(F.conv2d(x, kernels, padding=2)), 2) for x in X.split(500)])
    return dict(zip(CONV_LAYERS, (X, deeper)))


def conv_rows(X, n: int, warm: int, repeats):
    """Images/s of both conv layers in both modes on both schedules, and of F.conv2d with the same
    kernels (the floor). Each layer first learns from ``warm`` images (untimed: past the silent
    start), then n images are timed; fired kernels per location from the timed run."""
    inputs = conv_inputs(X[:warm + n])

    def make(layer, mode, schedule):
        def prepare():
            fp = FpConv2d(**CONV_LAYERS[layer], seed=0, mode=mode, **CONV_SCHEDULES[schedule])
            feed(fp, inputs[layer][:warm], batch=250)
            return fp
        return prepare, lambda fp: feed(fp, inputs[layer][warm:], batch=250)

    def floor(layer):
        kernels = FpConv2d(**CONV_LAYERS[layer], seed=0).weight
        padding = CONV_LAYERS[layer]["padding"]
        return nothing, lambda _: [F.conv2d(x, kernels, padding=padding) for x in inputs[layer][warm:].split(250)]

    cases = {(layer, "floor", "-"): floor(layer) for layer in CONV_LAYERS}
    cases.update({(layer, mode, schedule): make(layer, mode, schedule) for layer in CONV_LAYERS
                  for schedule in CONV_SCHEDULES for mode in ("sequential", "batch")})
    seconds = fastest(cases, repeats)
    rows = []
    for (layer, mode, schedule), prepare_run in cases.items():
        if mode == "floor":
            continue
        fp = prepare_run[0]()
        fired = float((torch.cat([fp(x) for x in inputs[layer][warm:].split(250)]) > 0).float().sum(1).mean())
        rate, floor_rate = n / seconds[layer, mode, schedule], n / seconds[layer, "floor", "-"]
        rows.append((layer, schedule, mode, rate, floor_rate, fired))
    return rows


def one_sample_rate(X, n: int, repeats) -> float:
    """Samples/s of learning forwards of one sample each into FpLinear(784, 1000), dense schedule,
    after 3,000 samples of warm-up in one call (untimed)."""
    def prepare():
        layer = FpLinear(784, 1000, seed=0, **SCHEDULES["dense"])
        layer(X[:3000])
        return layer

    stream = X[3000:3000 + n]
    if not len(stream):
        raise ValueError(f"one_sample_rate needs more than 3000 samples, got {len(X)}")

    def run(layer):
        for x in stream:
            layer(x)
    return len(stream) / fastest({"one": (prepare, run)}, repeats)["one"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--conv-samples", type=int, default=2_000)
    parser.add_argument("--conv-warm", type=int, default=1_000)
    parser.add_argument("--one-samples", type=int, default=2_000)
    parser.add_argument("--switch-samples", type=int, default=5_000)
    parser.add_argument("--repeats", type=int, default=3,
                        help="time each case this many times (interleaved) and keep the fastest run")
    parser.add_argument("--out", help="also write the printed figures to this file")
    args = parser.parse_args(argv)

    X, name = images(args.samples)
    for mode in ("sequential", "batch"):  # compile the kernels and warm the allocator, untimed
        for switches in ({}, *SWITCHES.values()):
            FpLinear(784, 1000, mode=mode, **SCHEDULES["dense"], **switches)(X[:3000].flatten(1))
        for layer, inputs in conv_inputs(X[:50]).items():
            FpConv2d(**CONV_LAYERS[layer], mode=mode)(inputs)
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
    rate = one_sample_rate(X.flatten(1), args.one_samples, args.repeats)
    lines += ["", f"FpLinear 784 -> 1000, dense schedule, one sample per call (an online learner's feed): "
              f"{rate:,.0f} samples/s ({1e6 / rate:.0f} us per call)"]
    lines += ["", f"FpConv2d, images/s after {args.conv_warm} images of learning (untimed), "
              f"{args.conv_samples} timed; floor: F.conv2d with the same kernels",
              f"{'layer':<24}{'schedule':<10}{'mode':<12}{'images/s':>10}{'floor':>10}{'ratio':>8}"
              f"{'fired kernels per location':>28}"]
    for layer, schedule, mode, rate, floor, fired in conv_rows(X, args.conv_samples, args.conv_warm, args.repeats):
        lines.append(f"{layer:<24}{schedule:<10}{mode:<12}{rate:>10,.0f}{floor:>10,.0f}{rate / floor:>7.2f}x"
                     f"{fired:>28.1f}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
