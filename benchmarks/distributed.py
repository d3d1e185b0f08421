"""Sharded Frontprop layer: samples/s on 1 and 2 processes, bytes moved, and a scaling model.

FpLinear 784 -> 8000 on the dense schedule of ``benchmarks/layers.py`` (w_boost 0.01, t_decay
0.001, float32), Fashion-MNIST (digits resized to 28x28 when missing): an ordinary layer in one
process, then ``fpwb.distributed.ShardedLayer`` on 1 and on 2 gloo processes (one torch thread
each), every rank reading the same stream. The layers first learn from ``--warmup`` samples
(untimed: past the silent start, most samples fire), then the next ``--samples`` are timed. k-WTA
(k_winners=5, one candidate exchange per sample) is timed on ``--kwta-samples``. Then the bytes
each rank moves per sample and a model of what 1 million neurons on N machines would need.

    python benchmarks/distributed.py [--samples 5000] [--out benchmarks/results/distributed.txt]
"""
import argparse
import time

import torch

from fpwb import FpLinear
from fpwb.distributed import shard_layer, spawn
from layers import images  # benchmarks/layers.py: the same images as the layer benchmark

SCHEDULE = dict(w_boost=0.01, t_decay=0.001)  # benchmarks/layers.py's dense schedule
N_NEURONS, K_WINNERS, BATCH = 8000, 5, 1000
# The scaling model's assumptions (said in the output).
BANDWIDTH = 10e9 / 8  # bytes/s per machine: 10 Gb/s Ethernet
LATENCY = 20e-6  # seconds per message step of a collective


def _timed(layer, X):
    start = time.perf_counter()
    for batch in X.split(BATCH):
        layer(batch)
    return time.perf_counter() - start


def measure(warmup: int, samples: int, kwta_samples: int, sharded: bool):
    """On every rank: seconds for the timed samples, plain and k-WTA, and the firings per sample."""
    X, _ = images(warmup + samples)
    X = X.flatten(1)
    make = lambda **kw: FpLinear(784, N_NEURONS, seed=0, **SCHEDULE, **kw)
    layer = shard_layer(make()) if sharded else make()
    local = layer.local if sharded else layer
    layer(X[:warmup])
    fired = int(local.fire_count.sum())
    seconds = _timed(layer, X[warmup:])
    fired = (int(local.fire_count.sum()) - fired) / samples
    kwta = make(k_winners=K_WINNERS, chunk_size=1)
    kwta = shard_layer(kwta) if sharded else kwta
    kwta(X[:warmup])
    kwta_seconds = _timed(kwta, X[warmup:warmup + kwta_samples])
    return {"seconds": seconds, "fired": fired, "kwta_seconds": kwta_seconds}


def traffic(world: int, n_neurons: int, in_features: int, fired: float, itemsize: int = 4):
    """Bytes one rank sends per sample in the exact sharded mode (ring collectives)."""
    share = n_neurons / world
    return {"input broadcast (root sends to each)": in_features * itemsize,
            "output gather, dense (all-gather)": (world - 1) * share * itemsize,
            "output gather, fired only (index + value)": (world - 1) * fired / world * (4 + itemsize),
            "k-WTA candidates (all-gather of k values + indices)": (world - 1) * K_WINNERS * 16}


def scaling_model(neuron_rate: float, fired: float, in_features: int = 784, n_neurons: int = 1_000_000):
    """Samples/s of the exact sharded mode for n_neurons on N machines: min of compute, bandwidth
    and latency limits. neuron_rate: neuron-samples per second one core sustains (measured)."""
    lines = [f"{'machines':>9} {'compute':>10} {'dense gather':>13} {'sparse gather':>14} "
             f"{'k-WTA latency':>14}   (samples/s each limit allows)"]
    for N in (1, 8, 64, 512):
        compute = neuron_rate * N / n_neurons
        dense = BANDWIDTH / max(1e-30, (N - 1) / N * n_neurons * 4 + in_features * 4)
        sparse = BANDWIDTH / max(1e-30, (N - 1) / N * fired * 8 + in_features * 4)
        kwta = 1 / ((N - 1) * LATENCY) if N > 1 else float("inf")
        lines.append(f"{N:>9} {compute:>10,.0f} {dense:>13,.0f} {sparse:>14,.0f} {kwta:>14,.0f}")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=3000)
    parser.add_argument("--kwta-samples", type=int, default=300)
    parser.add_argument("--out", help="also write the printed figures to this file")
    args = parser.parse_args(argv)
    _, name = images(1)
    run = (args.warmup, args.samples, args.kwta_samples)
    alone = spawn(measure, 1, *run, False, threads=1, timeout=3000)[0]
    one = spawn(measure, 1, *run, True, threads=1, timeout=3000)[0]
    two = spawn(measure, 2, *run, True, threads=1, timeout=3000)
    two_s = max(r["seconds"] for r in two)
    two_k = max(r["kwta_seconds"] for r in two)
    fired = alone["fired"]
    rate = lambda s, n: n / s
    lines = [f"Sharded FpLinear 784 -> {N_NEURONS:,}, dense schedule, float32, {name}, one torch "
             f"thread per process; {args.warmup:,} samples learned first, then {args.samples:,} "
             f"timed ({fired:.1f} firings per sample).",
             "The CPUs were shared with other work while this ran: the timings are indicative only.",
             "",
             f"{'':32} {'plain rule':>14} {'k-WTA (k=5)':>14}   samples/s",
             f"{'ordinary layer, 1 process':32} {rate(alone['seconds'], args.samples):>14,.0f} "
             f"{rate(alone['kwta_seconds'], args.kwta_samples):>14,.0f}",
             f"{'sharded, 1 process':32} {rate(one['seconds'], args.samples):>14,.0f} "
             f"{rate(one['kwta_seconds'], args.kwta_samples):>14,.0f}",
             f"{'sharded, 2 processes':32} {rate(two_s, args.samples):>14,.0f} "
             f"{rate(two_k, args.kwta_samples):>14,.0f}",
             f"speed-up of 2 processes over the ordinary layer: plain "
             f"{alone['seconds'] / two_s:.2f}x, k-WTA {alone['kwta_seconds'] / two_k:.2f}x",
             "",
             "Bytes one rank sends per sample, 2 processes (float32):"]
    lines += [f"  {k:52} {v:>12,.0f}" for k, v in traffic(2, N_NEURONS, 784, fired).items()]
    neuron_rate = N_NEURONS * args.samples / alone["seconds"]
    lines += ["", f"Scaling model, 1,000,000 neurons on N machines (exact sharded mode). Assumptions: "
              f"one core per machine at the measured {neuron_rate:,.0f} neuron-samples/s; "
              f"{BANDWIDTH * 8 / 1e9:g} Gb/s links, {LATENCY * 1e6:g} us per collective step "
              f"(a ring all-gather takes N - 1 steps); the {fired:.1f} firings per sample of this "
              f"schedule scaled to 1M neurons ({fired * 1e6 / N_NEURONS:,.0f}); the input (784 floats) "
              f"broadcast every sample; compute, bandwidth and latency do not overlap-limit each "
              f"other (each column is one limit; the rate is the smallest).",
              *scaling_model(neuron_rate, fired * 1e6 / N_NEURONS)]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
