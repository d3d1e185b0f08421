"""A Frontprop layer sharded over processes, checked against the same layer in one process.

Every rank builds the same FpLinear(784, 2000) from one seed, keeps its slice of the neurons
(``fpwb.distributed.shard_layer``) and sees the same Fashion-MNIST stream (scikit-learn's digits
when Fashion-MNIST is missing); rank 0 then trains the whole layer alone and prints the largest
difference of weights, thresholds and outputs (weights and thresholds 0 in float64: the sharded
layer computes the same bits; outputs 0, or an ulp or two on CPUs whose matmul rounds a row by the
number of rows in the product) and the samples/s of both, for the plain rule and for k-winners-take-all (which exchanges
each sample's candidates between the ranks: much slower).

    .venv/bin/torchrun --nproc-per-node 2 examples/distributed.py [--small] [--samples 10000]
"""
import argparse
import time

import torch
import torch.distributed as dist

from fpwb import FpLinear
from fpwb.data import DatasetNotFoundError, flatten, load
from fpwb.distributed import gather_layer, shard_layer


def stream(n):
    try:
        X, _ = load("fashion_mnist", download=False)
        name = "Fashion-MNIST"
    except DatasetNotFoundError:
        X, _ = load("digits")
        name = "digits (Fashion-MNIST not found)"
    return flatten(X)[:n].double(), name


def train(layer, X, batch_size):
    """Outputs of one pass over X in batches, and the seconds it took."""
    start = time.perf_counter()
    out = torch.cat([layer(batch) for batch in X.split(batch_size)])
    return out, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--neurons", type=int, default=2000)
    parser.add_argument("--kwta-samples", type=int, default=2000, help="k-WTA walks sample by sample")
    parser.add_argument("--small", action="store_true", help="200 neurons, 1000 samples (a quick check)")
    args = parser.parse_args()
    if args.small:
        args.samples, args.neurons, args.kwta_samples = 1000, 200, 800
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    X, name = stream(args.samples)
    if rank == 0:
        print(f"{name}: {len(X)} samples, FpLinear({X.shape[1]}, {args.neurons}), float64, "
              f"{world} processes")
    cases = (("plain rule", {}, len(X), 500),
             ("k-WTA (k_winners=5)", dict(k_winners=5, chunk_size=1), args.kwta_samples, 100))
    for case, switches, n, batch_size in cases:
        def make():
            return FpLinear(X.shape[1], args.neurons, seed=0, w_boost=0.01, t_decay=0.005,
                            dtype=torch.float64, **switches)

        sharded = shard_layer(make())
        out, seconds = train(sharded, X[:n], batch_size)
        whole = gather_layer(sharded)  # an ordinary FpLinear on every rank
        if rank == 0:
            alone = make()
            reference, alone_seconds = train(alone, X[:n], batch_size)
            diffs = [float((a - b).abs().max()) for a, b in
                     ((whole.weight, alone.weight), (whole.threshold, alone.threshold), (out, reference))]
            print(f"max |difference| {case}: weights {diffs[0]:g}, thresholds {diffs[1]:g}, "
                  f"outputs {diffs[2]:g}")
            print(f"  samples/s {case}: sharded over {world} {n / seconds:,.0f}, one process "
                  f"{n / alone_seconds:,.0f} ({int(alone.fire_count.sum()):,} firings)")
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
