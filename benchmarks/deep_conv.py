"""Deep Frontprop conv nets against the same net untrained, imprinted, k-means and backprop.

1, 2 and 3 conv stages (``fpwb.nets.protocol``), the same linear probe on every stage, over seeds;
writes benchmarks/results/deep_conv.md (table, per-stage probes, learned share, the command).
The default is the full protocol: Fashion-MNIST's 60,000 / 10,000 images, every rule, 3 seeds
(hours on 2 cores). The README's tables come from the subsample run and from three full-size runs
of a few rules each, combined into one table (16-60 minutes each here):

    .venv/bin/python benchmarks/deep_conv.py --n-train 10000 --n-test 5000   # every rule, a subsample
    .venv/bin/python benchmarks/deep_conv.py --rules frontprop --out benchmarks/results/deep_conv_full_frontprop.md
    .venv/bin/python benchmarks/deep_conv.py --rules oja soft_wta rank_k homeostatic --baselines untrained \
        --out benchmarks/results/deep_conv_full_rest.md
    .venv/bin/python benchmarks/deep_conv.py --rules per_neuron_rate --out benchmarks/results/deep_conv_full.md
    .venv/bin/python benchmarks/deep_conv.py --combine benchmarks/results/deep_conv_full_frontprop.json \
        benchmarks/results/deep_conv_full_rest.json benchmarks/results/deep_conv_full.json \
        --out benchmarks/results/deep_conv_full_every_rule.md                 # the three as one table
    .venv/bin/python benchmarks/deep_conv.py --smoke        # digits, seconds
    .venv/bin/python benchmarks/deep_conv.py --replot --out benchmarks/results/deep_conv.md  # figure only

Besides the table it writes <out>.json (every row, the command, the minutes) and <out>.png (probe
against depth). ``--combine`` lets the methods or the seeds of one protocol run in separate processes (or on
separate machines) and be reported as one table: each method's rows for a seed come from the
first run that has them, runs that both ran a method on a seed must agree on it bit for bit
(their baselines, say), and every method must end up with the same seeds.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from fpwb import rules as learning_rules
from fpwb.nets import protocol
from fpwb.runs.notebook import coerce
from fpwb.viz import plots

ROOT = Path(__file__).resolve().parent.parent


#: The options combined runs must share besides their data and net (which the .json records and
#: ``protocol.combine`` compares); the others choose methods or seeds, or where to write.
SHARED_SETTINGS = ("epochs", "backprop_epochs")
#: The options that take one value for every stage or one per stage.
PER_STAGE_OPTIONS = ("pool_strides", "w_boost", "t_decay")
#: The data and net options ``--smoke`` replaces with its own (digits, ``protocol.smoke_spec``).
SMOKE_REPLACES = ("dataset", "n_train", "n_test", "channels", "kernel_sizes", "pool_strides", "pool")


def rule_option(text: str):
    """A --rules entry: a rule name, or name:setting=value,... for that rule with those settings
    (each value converted to the type of the setting's default, as notebook parameters are)."""
    name, _, assignments = text.partition(":")
    if name not in learning_rules.names():
        raise argparse.ArgumentTypeError(f"unknown rule {name!r}; expected one of {learning_rules.names()}")
    if not assignments:
        return name
    defaults, settings = learning_rules.REGISTRY[name]().settings(), {}
    for assignment in assignments.split(","):
        key, equals, value = assignment.partition("=")
        if key not in defaults:
            raise argparse.ArgumentTypeError(f"{name} has no setting {key}; its settings are "
                                             f"{', '.join(defaults) or 'none'}")
        try:
            if not equals:
                raise ValueError(f"no value for {key}")
            settings[key] = coerce(name, key, value, defaults[key])
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{text!r}: settings are setting=number pairs, got "
                                             f"{assignment!r} ({error})")
    try:
        return learning_rules.REGISTRY[name](**settings)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}")


def parser_of_runs() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--n-train", type=int, default=60_000, help="training images (every method)")
    parser.add_argument("--n-test", type=int, default=10_000)
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--kernel-sizes", type=int, nargs="+", default=[5, 3, 3])
    parser.add_argument("--pool-strides", type=int, nargs="+", default=[2],
                        help="the pooling stride after every stage: one value, or one per stage")
    parser.add_argument("--pool", choices=("max", "avg"), default="max", help="the pooling after every stage")
    parser.add_argument("--rules", nargs="+", default=None, type=rule_option,
                        help="rule names, each with its settings if not the defaults, as "
                             "rank_k:rank=3,delta=0.2 (default: every rule)")
    parser.add_argument("--k-winners", type=int, nargs="*", default=[1],
                        help="k_winners switch settings run besides the plain rule")
    parser.add_argument("--mode", default="batch", choices=["batch", "sequential"])
    parser.add_argument("--w-boost", type=float, nargs="+", default=[0.05],
                        help="the Frontprop layers' rate: one value, or one per stage")
    parser.add_argument("--t-decay", type=float, nargs="+", default=[0.003],
                        help="their threshold decay: one value, or one per stage")
    parser.add_argument("--epochs", type=int, default=1, help="Frontprop epochs per stage")
    parser.add_argument("--backprop-epochs", type=int, default=2)
    parser.add_argument("--baselines", nargs="+", default=list(protocol.KERNELS), choices=protocol.KERNELS,
                        help="the other methods run beside Frontprop (default: all of them)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "deep_conv.md"))
    parser.add_argument("--replot", action="store_true",
                        help="only draw <out>.png again from the rows in <out>.json of an earlier run")
    parser.add_argument("--combine", nargs="+", metavar="JSON",
                        help="write <out> from earlier runs' .json files instead of running: each method "
                             "and seed once, after checking that the runs share their settings, agree on "
                             "every method and seed they both ran, and give every method the same seeds")
    return parser


def effective(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """The options as a run uses them: smoke mode runs two seeds and one backprop epoch, on its
    own data and net, so it refuses the data and net options it would otherwise ignore."""
    if args.smoke:
        ignored = [name for name in SMOKE_REPLACES if getattr(args, name) != parser.get_default(name)]
        if ignored:
            options = ", ".join("--" + name.replace("_", "-") for name in ignored)
            parser.error(f"--smoke runs its own small net on digits and would ignore {options}; "
                         f"drop them, or drop --smoke")
        args.seeds, args.backprop_epochs = args.seeds[:2], 1
    stages = len(args.channels)  # smoke mode's own net has as many stages as the default one
    for name in PER_STAGE_OPTIONS:
        if len(getattr(args, name)) not in (1, stages):
            parser.error(f"--{name.replace('_', '-')} takes one value for every stage or one per stage "
                         f"({stages}), got {getattr(args, name)}")
    return args


def main(argv=None):
    parser = parser_of_runs()
    args = effective(parser, parser.parse_args(argv))
    command = "python benchmarks/deep_conv.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    if args.replot:
        rows_file = Path(args.out).with_suffix(".json")
        if not rows_file.is_file():
            parser.error(f"--replot draws from {rows_file}, written by an earlier run; there is none")
        saved = json.loads(rows_file.read_text())
        print(f"wrote {draw(saved, Path(args.out))}")
        return
    if args.combine:
        if Path(args.out).with_suffix(".json").resolve() in {Path(f).resolve() for f in args.combine}:
            parser.error(f"--out {args.out} would overwrite {Path(args.out).with_suffix('.json')}, one of the "
                         f"runs to combine; name another --out")
        saved, settings, provenance = combined(parser, args.combine)
    else:
        saved = run(args)
        saved["command"], settings = command.strip(), args
        provenance = f"Command: `{saved['command']}` ({saved['minutes']:.0f} min on the shared 2-core machine)."
    print(protocol.table(saved["rows"]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report(saved, settings, provenance))
    Path(args.out).with_suffix(".json").write_text(json.dumps(saved, indent=1, default=float))
    draw(saved, Path(args.out))
    print(f"wrote {args.out}, its .json and .png")


def run(args) -> dict:
    """Every method of the protocol under the options; the rows, net, data and minutes taken."""
    layer = {"mode": args.mode, "w_boost": one_or_per_stage(args.w_boost), "t_decay": one_or_per_stage(args.t_decay)}
    if args.smoke:
        spec = protocol.smoke_spec(**layer)
        data = protocol.load_data("digits", smoke=True)
    else:
        data = protocol.load_data(args.dataset, args.n_train, args.n_test)
        spec = protocol.NetSpec(in_channels=data[0].shape[1], channels=tuple(args.channels),
                                kernel_sizes=tuple(args.kernel_sizes), layer=layer, pool=args.pool,
                                pool_stride=one_or_per_stage(args.pool_strides))
    switches = {"": {}, **{f"k_winners={k}": {"k_winners": k} for k in args.k_winners}}
    frontprop = protocol.frontprop_variants(args.rules, switches)
    start = time.perf_counter()
    result = protocol.run(spec, data[:4], frontprop=frontprop, kernels=tuple(args.baselines),
                          seeds=tuple(args.seeds), epochs=args.epochs, backprop_epochs=args.backprop_epochs)
    return {"rows": result["rows"], "spec": result["spec"],
            "data": {"dataset": data[4], "n_train": len(data[0]), "n_test": len(data[2])},
            "minutes": (time.perf_counter() - start) / 60}


def one_or_per_stage(values: list):
    """An option given once or once per stage, as the protocol takes it: the value, or a tuple."""
    return values[0] if len(values) == 1 else tuple(values)


def combined(parser, files: list[str]) -> tuple[dict, argparse.Namespace, str]:
    """The rows of earlier runs as one run (``protocol.combine``, which also compares their nets),
    the settings they share, and a line naming each run's command. Runs whose data or
    ``SHARED_SETTINGS`` differ are refused."""
    runs, settings = {}, {}
    for name in files:
        path = Path(name)
        if not path.is_file():
            parser.error(f"--combine reads the .json an earlier run wrote; {path} is not a file")
        saved = json.loads(path.read_text())
        if "command" not in saved:
            parser.error(f"{path} records no command (written before runs recorded theirs), so its "
                         f"settings cannot be checked")
        runs[str(path)] = saved
        settings[str(path)] = effective(parser, parser.parse_args(shlex.split(saved["command"])[2:]))
    (first, first_settings), *others = settings.items()
    for name, these in others:
        differ = [o for o in SHARED_SETTINGS if getattr(these, o) != getattr(first_settings, o)]
        if differ or runs[name]["data"] != runs[first]["data"]:
            parser.error(f"{name} and {first} ran different protocols "
                         f"({', '.join(differ) or 'data'} differ); only runs of one protocol combine")
    try:
        rows = protocol.combine(runs)
    except ValueError as error:
        parser.error(str(error))
    saved = {"rows": rows, "spec": runs[first]["spec"], "data": runs[first]["data"],
             "combined": {name: run["command"] for name, run in runs.items()},
             "minutes": sum(run["minutes"] for run in runs.values())}
    provenance = "Rows of {} runs, each method once (where runs share a method its rows agree): {}.".format(
        len(runs), "; ".join(f"`{run['command']}` ({run['minutes']:.0f} min)" for run in runs.values()))
    return saved, first_settings, provenance


def report(saved: dict, settings, provenance: str) -> str:
    """The Markdown of a run: where it comes from, the protocol, the table, every stage."""
    rows, data = saved["rows"], saved["data"]
    summary = protocol.summary(rows)
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
    spec = protocol.NetSpec(**saved["spec"])
    seeds = sorted({r["seed"] for r in rows})
    return "\n".join([
        "# Deep conv nets: Frontprop against the same net untrained",
        "",
        provenance,
        "",
        f"Data: {data['dataset']}, {data['n_train']} training / {data['n_test']} test images (the same random "
        f"subsample, seed 0, for every method). Net: {spec.describe()}. Frontprop layers: "
        f"{json.dumps(spec.layer)}, greedy, {settings.epochs} epoch(s) per stage. Seeds {seeds}; "
        f"{'mean ± std (ddof 1)' if len(seeds) > 1 else 'one seed, so no spread'} of the linear probe's "
        f"test accuracy (%) on the last stage; "
        f"backprop: Adam, {settings.backprop_epochs} epochs, one net per depth.",
        "",
        protocol.table(rows),
        "",
        "Every stage of the deepest net (greedy methods: stage k of it is the k-stage net):",
        "",
        *stages,
        ""])


def draw(saved: dict, out: Path) -> Path:
    """<out>.png: the probe against depth of a run's rows (``plots.probe_against_depth``)."""
    fig = plots.probe_against_depth(protocol.summary(saved["rows"]),
                                    data=saved.get("data"))  # (runs before it was recorded lack it)
    path = out.with_suffix(".png")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


if __name__ == "__main__":
    main()
