"""Print (and save) the probe table: Frontprop vs a backprop layer, random, k-means, PCA and raw
pixels, every readout; Forward-Forward on request.

    .venv/bin/python benchmarks/probe.py                      # digits, then Fashion-MNIST if present
    .venv/bin/python benchmarks/probe.py --datasets fashion_mnist --seeds 0 1 2
    .venv/bin/python benchmarks/probe.py --datasets digits --methods frontprop forward_forward backprop

Writes benchmarks/results/probe_<dataset>.md (summary tables and every row) and .csv, updated
after every row so that a long run leaves partial results. Upstream settings: w_boost 0.01,
t_decay 0.0001, one epoch. digits has 1347 training images: at t_decay 0.0001 the thresholds
barely decay in one epoch and no neuron fires, so digits runs 45 epochs (about 60,000 samples,
one MNIST epoch) unless --epochs says otherwise. forward_forward (``--methods``, not in the default
run) trains 5-10x as long as that on digits. With the backprop layer in the run, a table of
linear CKA between each layer's features and the backprop layer's of the same size and seed.
"""
from __future__ import annotations

import argparse
import platform
import shlex
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fpwb.data import DatasetNotFoundError, load  # noqa: E402
from fpwb.evaluation.probe_table import ALL_METHODS, METHODS, probe_table, rows_markdown, summary_markdown, write_csv  # noqa: E402
from fpwb.evaluation.probes import PROBE_L2, PROBE_MAX_ITER, PROBE_TOL, READOUTS  # noqa: E402

EPOCHS = {"digits": 45}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "fashion_mnist"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[20, 100, 200, 500, 1000])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=None, help="default: 45 for digits, else 1")
    parser.add_argument("--w-boost", type=float, default=0.01)
    parser.add_argument("--t-decay", type=float, default=0.0001)
    parser.add_argument("--readouts", nargs="+", default=list(READOUTS), choices=READOUTS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=ALL_METHODS)
    parser.add_argument("--knn-test", type=int, default=2000,
                        help="test samples scored by the k-NN probe (0: all)")
    parser.add_argument("--root", default="data")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        try:
            load(name, "test", args.root, download=False)
        except DatasetNotFoundError as err:
            if name == "digits":
                raise
            print(f"skipping {name}: {str(err).splitlines()[0]}")
            continue
        epochs = args.epochs or EPOCHS.get(name, 1)
        header = (f"# Probe table: {name}\n\n"
                  f"Command: `python benchmarks/probe.py {shlex.join(argv)}`\n\n"
                  f"Frontprop: FpLinear, w_boost {args.w_boost}, t_decay {args.t_decay}, {epochs} "
                  f"epoch(s), sequential. backprop and forward_forward (supervised): "
                  f"fpwb.evaluation.similarity.backprop_layer and fpwb.baselines.forward_forward.forward_forward (two "
                  f"layers of the size), their defaults. Linear probe: standardised features, "
                  f"multinomial logistic regression, L2 {PROBE_L2}, L-BFGS up to {PROBE_MAX_ITER} iterations, "
                  f"gradient tolerance {PROBE_TOL}. k-NN: cosine, k=5, on the first "
                  f"{args.knn_test or 'all'} test samples. Accuracies in %, test split. "
                  f"Machine: {platform.processor() or platform.machine()}, "
                  f"{torch.get_num_threads()} threads.\n")
        rows = []

        def save(row):
            rows.append(row)
            write_csv(rows, out / f"probe_{name}.csv")
            (out / f"probe_{name}.md").write_text(
                header + "\n## Linear probe accuracy\n\n" + summary_markdown(rows) +
                "\n\n## k-NN accuracy\n\n" + summary_markdown(rows, "knn_acc") +
                ("\n\n## Linear CKA with the backprop layer (relu test features)\n\n" +
                 summary_markdown([r for r in rows if r["readout"] in ("relu", "neutral")], "cka")
                 if "backprop" in args.methods else "") +
                "\n\n## Every row\n\n" + rows_markdown(rows) + "\n")

        probe_table(name, sizes=tuple(args.sizes), epochs=epochs, w_boost=args.w_boost,
                    t_decay=args.t_decay, readouts=tuple(args.readouts), seeds=tuple(args.seeds),
                    methods=tuple(args.methods), knn_test=args.knn_test or None, root=args.root,
                    on_row=save)
        print((out / f"probe_{name}.md").read_text())


if __name__ == "__main__":
    main()
