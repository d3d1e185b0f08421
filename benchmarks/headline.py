"""The Fashion-MNIST headline: the best Frontprop configuration against an untrained random layer of
the same size, raw pixels and k-means, with the same probe and readout, over several seeds.

    .venv/bin/python benchmarks/headline.py                    # 3 seeds, writes results/headline.md
    .venv/bin/python benchmarks/headline.py --seeds 0 1 2 3 4 --probe-train 60000

Every layer has ``--neurons`` neurons (1000) and is read out with ``relu`` (max(0, cosine)): the
random and k-means layers have no learned thresholds, so ``relu`` is the readout all share; the
Frontprop layers' own ``fired`` output is listed besides. Probe: ``fpwb.evaluation.protocol.probe``
(standardised features, L2 1e-3, L-BFGS) fit on the first ``--probe-train`` training images,
scored on the whole test set. Frontprop layers learn one pass over the 60,000 training images
in seeded shuffled order (``fpwb.evaluation.protocol.fit``, exact sequential mode), and report the
share of their neurons that learned (weights moved from their initial values); a configuration
where fewer than half learned is flagged: it is mostly an untrained random layer.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fpwb import FpLinear, baselines  # noqa: E402
from fpwb.data import flatten, load  # noqa: E402
from fpwb.evaluation import diagnostics  # noqa: E402
from fpwb.evaluation.protocol import fit, probe  # noqa: E402

#: Frontprop configurations measured: the upstream rule and settings, and the best found with the
#: switches (notebook 06 and the exploration described in headline.md).
CONFIGS = {
    "frontprop, upstream (plain rule)": dict(w_boost=0.01, t_decay=1e-4),
    "frontprop, k-WTA k=1": dict(w_boost=0.05, t_decay=3e-3, k_winners=1),
    "frontprop, k-WTA k=1 + repulsion": dict(w_boost=0.05, t_decay=3e-3, k_winners=1, repulsion=0.1),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--neurons", type=int, default=1000)
    parser.add_argument("--probe-train", type=int, default=10000)
    parser.add_argument("--rules", nargs="+", default=["frontprop"],
                        help="learning rules (fpwb.rules names) for every Frontprop configuration")
    parser.add_argument("--root", default="data")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "headline.md"))
    args = parser.parse_args(argv)
    (Xtr, ytr), (Xte, yte) = load("fashion_mnist", "train", args.root), load("fashion_mnist", "test", args.root)
    Xtr, Xte = flatten(Xtr).float(), flatten(Xte).float()
    ptr = slice(0, args.probe_train)
    rows = []

    def add(method, seed, layer, readouts, train_s, settings="", learned=None):
        for readout in readouts:
            rows.append({"method": method, "settings": settings, "readout": readout, "seed": seed,
                         "accuracy": probe(layer, Xtr[ptr], ytr[ptr], Xte, yte, readout=readout)["accuracy"],
                         "train_s": train_s, "redundant_pairs": diagnostics.redundancy(layer)["pairs"],
                         "learned": learned})
            print(json.dumps(rows[-1]), flush=True)

    rows.append({"method": "raw pixels", "settings": "784 pixels", "readout": "pixels", "seed": None,
                 "accuracy": probe(None, Xtr[ptr], ytr[ptr], Xte, yte, readout="pixels")["accuracy"],
                 "train_s": 0, "redundant_pairs": None, "learned": None})
    for seed in args.seeds:
        add("random layer", seed, baselines.random_layer(784, args.neurons, seed), ["relu"], 0.0,
            "Gaussian unit rows, untrained")
        start = time.perf_counter()
        kmeans = baselines.kmeans_layer(Xtr, args.neurons, seed)
        add("k-means", seed, kmeans, ["relu"], time.perf_counter() - start, "MiniBatchKMeans centroids")
        for rule in args.rules:
            for name, config in CONFIGS.items():
                trained = fit(FpLinear(784, args.neurons, seed=seed, rule=rule, **config), Xtr, seed=seed,
                              desc=f"{name}, seed {seed}")
                settings = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in config.items())
                if rule != "frontprop":
                    name, settings = f"{name}, rule {rule}", f"rule={rule}, {settings}"
                add(name, seed, trained.model, ["relu", "fired"], trained.seconds, settings, trained.learned_share)
        write(rows, args)


def cell(values):
    mean = 100 * statistics.fmean(values)
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}"


def write(rows, args):
    keys = list(dict.fromkeys((r["method"], r["settings"], r["readout"]) for r in rows))
    lines = ["| method | settings | readout | probe accuracy % (mean ± std) | seeds | redundant pairs | "
             "neurons that learned |",
             "|---|---|---|---|---|---|---|"]
    flagged = False
    for method, settings, readout in keys:
        mine = [r for r in rows if (r["method"], r["settings"], r["readout"]) == (method, settings, readout)]
        pairs = [r["redundant_pairs"] for r in mine if r["redundant_pairs"] is not None]
        learned = [r["learned"] for r in mine if r.get("learned") is not None]
        share = ""
        if learned:
            share = f"{100 * statistics.fmean(learned):.1f} %"
            if statistics.fmean(learned) < diagnostics.FEW_LEARNED:
                share += " † (fewer than half)"
                flagged = True
        lines.append(f"| {method} | {settings} | {readout} | {cell([r['accuracy'] for r in mine])} | "
                     f"{len([r for r in mine if r['seed'] is not None]) or '-'} | "
                     f"{round(statistics.fmean(pairs)) if pairs else ''} | {share} |")
    if flagged:
        lines += ["", "† fewer than half of the neurons learned (weights never moved from their initial "
                      "values): the layer is mostly an untrained random layer, so its probe says little "
                      "about the rule."]
    text = (f"# Headline: Fashion-MNIST, {args.neurons} neurons\n\n"
            f"Command: `python benchmarks/headline.py --seeds {' '.join(map(str, args.seeds))} "
            f"--probe-train {args.probe_train}"
            + ("" if args.rules == ["frontprop"] else f" --rules {' '.join(args.rules)}") + "`\n\n"
            f"Linear probe (`fpwb.evaluation.probes.linear_probe`: standardised features, L2 1e-3, L-BFGS) fit on "
            f"the first {args.probe_train} training images, test accuracy on all 10,000 test images. "
            f"Every layer {args.neurons} neurons; `relu` readout (max(0, cosine)) for all, the "
            f"Frontprop layers' own `fired` output besides. Frontprop: one pass over the 60,000 "
            f"training images, seeded order, exact sequential mode; neurons that learned: share whose "
            f"weights moved from their initial values (mean over seeds). Machine: "
            f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads.\n\n"
            + "\n".join(lines) + "\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
