"""How often 20 neurons find all six simple patterns (cosine >= 0.95), over many seeds, and what
the runs that miss a pattern look like.

The core issue's learning bar is 9 of 10 seeds; this measures the rule's real rate instead of
picking seeds. Default hyper-parameters (w_boost 0.02, t_decay 0.0005), 20,000 samples.

    python benchmarks/learning.py [--seeds 100] [--out benchmarks/results/learning.txt]
"""
import argparse

from tqdm.auto import tqdm

from fpwb.evaluation.convergence import pattern_match, train_on_patterns, why_missed
from fpwb.data import PATTERN_NAMES

CONFIGS = {
    "sequential, uniform": {},
    "sequential, 10:1:1:1:1:1": dict(probs=(10, 1, 1, 1, 1, 1)),
    "batch (256 per chunk), uniform": dict(mode="batch"),
    "batch (256 per chunk), 10:1:1:1:1:1": dict(mode="batch", probs=(10, 1, 1, 1, 1, 1)),
}


def measure(seeds, **kwargs):
    """(successes, successes among seeds 0-9, reports of the runs that missed, reports of the rest)."""
    wins, first_ten, missed, found = 0, 0, [], []
    for seed in tqdm(seeds, leave=False):
        layer = train_on_patterns(seed, **kwargs)
        ok = bool((pattern_match(layer.weight) >= 0.95).all())
        wins += ok
        first_ten += ok and seed < 10
        (found if ok else missed).append(why_missed(layer))
    return wins, first_ten, missed, found


def mean(reports, key):
    return sum(r[key] for r in reports) / len(reports) if reports else float("nan")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--out", help="also write the printed figures to this file")
    args = parser.parse_args(argv)
    seeds = range(args.seeds)
    lines = [f"All six patterns found (cosine >= 0.95), seeds 0..{args.seeds - 1}; 20 neurons, "
             "20,000 samples, default hyper-parameters", ""]
    details = ["Runs that missed a pattern, against the runs that found all six (means per run):",
               f"  {'configuration':<38}{'runs':<11}{'count':>6}{'never fired':>13}{'of which cos<0':>16}"
               f"{'holding':>9}   patterns missed"]
    for name, kwargs in CONFIGS.items():
        wins, first_ten, missed, found = measure(seeds, **kwargs)
        lines.append(f"  {name:<38}{wins:>4}/{len(seeds)} ({100 * wins / len(seeds):.0f}%); "
                     f"seeds 0-9: {first_ten}/10")
        print(lines[-1], flush=True)
        names = [PATTERN_NAMES[p] for r in missed for p in r["missed"]]
        counts = ", ".join(f"{n} {names.count(n)}" for n in PATTERN_NAMES if n in names)
        for label, reports, extra in (("missed", missed, counts), ("found all", found, "")):
            details.append(f"  {name:<38}{label:<11}{len(reports):>6}"
                           f"{mean(reports, 'never_fired'):>13.1f}"
                           f"{mean(reports, 'never_fired_all_negative'):>16.1f}"
                           f"{mean(reports, 'holding_a_pattern'):>9.1f}   {extra}")
    details += ["", "never fired: neurons with fire_count 0 after 20,000 samples; cos<0: of those, the ones "
                "whose cosine with every pattern is negative (thresholds decay toward 0, never below, so "
                "they can never fire); holding: neurons with cosine >= 0.95 to some pattern."]
    text = "\n".join(lines + [""] + details)
    print("\n".join([""] + details))
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
