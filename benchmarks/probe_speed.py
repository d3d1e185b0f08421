"""Linear-probe fit time: torch full-batch L-BFGS against scikit-learn, same objective, one run.

Features: an untrained random FpLinear(784, 1000) with the ``relu`` readout on the 60,000
Fashion-MNIST training images (digits repeated to 60,000 rows when Fashion-MNIST is missing).
The issue's bar: at most 60 s on a 2-core machine.

    python benchmarks/probe_speed.py [--out benchmarks/results/probe_speed.txt]
"""
import argparse

import torch

from fpwb.baselines import random_layer
from fpwb.data import DatasetNotFoundError, flatten, load
from fpwb.evaluation.probes import embed, linear_probe


def data():
    try:
        return load("fashion_mnist", download=False), load("fashion_mnist", "test", download=False), "Fashion-MNIST"
    except DatasetNotFoundError:
        (X, y), test = load("digits"), load("digits", "test")
        reps = -(-60_000 // len(X))
        return (X.repeat(reps, 1, 1, 1)[:60_000], y.repeat(reps)[:60_000]), test, "digits (repeated)"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="also write the printed figures to this file")
    args = parser.parse_args(argv)
    (X, y), (Xt, yt), name = data()
    layer = random_layer(flatten(X).shape[1], 1000, seed=0)
    F_train, F_test = embed(layer, flatten(X), readout="relu"), embed(layer, flatten(Xt), readout="relu")
    lines = [f"Linear probe on {tuple(F_train.shape)} features ({name}, random layer, relu); "
             f"torch {torch.__version__}, {torch.get_num_threads()} threads"]
    for backend in ("torch", "sklearn"):
        r = linear_probe(F_train, y, F_test, yt, backend=backend)
        lines.append(f"  {backend:<8} {r['seconds']:7.1f} s  accuracy {100 * r['accuracy']:.2f}%  "
                     f"iterations {r['iterations']}  converged {r['converged']}")
        print(lines[-1], flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
