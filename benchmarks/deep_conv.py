"""Deep Frontprop conv nets against the same net untrained, imprinted, k-means and backprop.

1, 2 and 3 conv stages (``fpwb.nets.protocol``), the same linear probe on every stage, over seeds;
writes benchmarks/results/deep_conv.md (table, per-stage probes, learned share, the command).
The default is the full protocol: Fashion-MNIST's 60,000 / 10,000 images, every rule, 3 seeds
(hours on 2 cores); the README's tables come from the two runs below (15-40 minutes each here).

    .venv/bin/python benchmarks/deep_conv.py --n-train 10000 --n-test 5000   # every rule, a subsample
    .venv/bin/python benchmarks/deep_conv.py --rules per_neuron_rate --out benchmarks/results/deep_conv_full.md
    .venv/bin/python benchmarks/deep_conv.py --smoke        # digits, seconds
    .venv/bin/python benchmarks/deep_conv.py --replot --out benchmarks/results/deep_conv.md  # figure only

Besides the table it writes <out>.json (every row) and <out>.png (probe against depth).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from fpwb.nets import protocol
from fpwb.viz import plots

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--n-train", type=int, default=60_000, help="training images (every method)")
    parser.add_argument("--n-test", type=int, default=10_000)
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--kernel-sizes", type=int, nargs="+", default=[5, 3, 3])
    parser.add_argument("--rules", nargs="+", default=None, help="rule names (default: every rule)")
    parser.add_argument("--k-winners", type=int, nargs="*", default=[1],
                        help="k_winners switch settings run besides the plain rule")
    parser.add_argument("--mode", default="batch", choices=["batch", "sequential"])
    parser.add_argument("--w-boost", type=float, default=0.05)
    parser.add_argument("--t-decay", type=float, default=0.003)
    parser.add_argument("--epochs", type=int, default=1, help="Frontprop epochs per stage")
    parser.add_argument("--backprop-epochs", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "deep_conv.md"))
    parser.add_argument("--replot", action="store_true",
                        help="only draw <out>.png again from the rows in <out>.json of an earlier run")
    args = parser.parse_args(argv)
    if args.replot:
        rows_file = Path(args.out).with_suffix(".json")
        if not rows_file.is_file():
            parser.error(f"--replot draws from {rows_file}, written by an earlier run; there is none")
        saved = json.loads(rows_file.read_text())
        print(f"wrote {draw(saved, Path(args.out))}")
        return

    layer = {"mode": args.mode, "w_boost": args.w_boost, "t_decay": args.t_decay}
    if args.smoke:
        spec = protocol.smoke_spec(**layer)
        data = protocol.load_data("digits", smoke=True)
        args.seeds, args.backprop_epochs = args.seeds[:2], 1
    else:
        data = protocol.load_data(args.dataset, args.n_train, args.n_test)
        spec = protocol.NetSpec(in_channels=data[0].shape[1], channels=tuple(args.channels),
                                kernel_sizes=tuple(args.kernel_sizes), layer=layer)
    switches = {"": {}, **{f"k_winners={k}": {"k_winners": k} for k in args.k_winners}}
    frontprop = protocol.frontprop_variants(args.rules, switches)
    start = time.perf_counter()
    result = protocol.run(spec, data[:4], frontprop=frontprop, seeds=tuple(args.seeds),
                          epochs=args.epochs, backprop_epochs=args.backprop_epochs)
    minutes = (time.perf_counter() - start) / 60
    rows = result["rows"]
    summary = protocol.summary(rows)
    print(protocol.table(rows))

    stages = ["| method | stage | probe (net of 3 stages) | learned share | redundant neurons |", "|---|---|---|---|---|"]
    deepest = max(r["depth"] for r in rows)
    for m in dict.fromkeys(r["method"] for r in rows):
        for k in range(1, deepest + 1):
            e = summary.get((m, deepest, k))
            if e is None:
                continue
            share = "-" if e["learned_share"] is None else f"{e['learned_share']:.2f}"
            red = "-" if e["redundant"] is None else f"{e['redundant']:.2f}"
            stages.append(f"| {m} | {k} | {protocol.probe_cell(e)} | {share} | {red} |")
    command = "python benchmarks/deep_conv.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    text = "\n".join([
        "# Deep conv nets: Frontprop against the same net untrained",
        "",
        f"Command: `{command.strip()}` ({minutes:.0f} min on the shared 2-core machine).",
        "",
        f"Data: {data[4]}, {len(data[0])} training / {len(data[2])} test images (the same random "
        f"subsample, seed 0, for every method). Net: {spec.describe()}. Frontprop layers: "
        f"{json.dumps(layer)}, greedy, {args.epochs} epoch(s) per stage. Seeds {args.seeds}; "
        f"{'mean ± std (ddof 1)' if len(args.seeds) > 1 else 'one seed, so no spread'} of the linear probe's "
        f"test accuracy (%) on the last stage; "
        f"backprop: Adam, {args.backprop_epochs} epochs, one net per depth.",
        "",
        protocol.table(rows),
        "",
        "Every stage of the deepest net (greedy methods: stage k of it is the k-stage net):",
        "",
        *stages,
        ""])
    saved = {"rows": rows, "spec": result["spec"],
             "data": {"dataset": data[4], "n_train": len(data[0]), "n_test": len(data[2])}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    Path(args.out).with_suffix(".json").write_text(json.dumps(saved, indent=1, default=float))
    draw(saved, Path(args.out))
    print(f"wrote {args.out}, its .json and .png ({minutes:.1f} min)")


def draw(saved: dict, out: Path) -> Path:
    """<out>.png: the probe against depth of a run's rows (``plots.probe_against_depth``)."""
    fig = plots.probe_against_depth(protocol.summary(saved["rows"]),
                                    data=saved.get("data"))  # (runs before it was recorded lack it)
    path = out.with_suffix(".png")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


if __name__ == "__main__":
    main()
