"""Learning on the simple patterns: every pattern gets a neuron (cosine >= 0.95) in most seeds.

The issue's bar is 9 of 10 seeds. The rule does not reach it: over 100 seeds it finds all six
patterns in about 3 runs of 4, in sequential and batch mode alike (``python
benchmarks/learning.py``). In a run that misses, every neuron that ever fired holds some pattern;
the missed pattern's would-be neurons were captured by other patterns first, and the neurons that
never fired have a negative cosine with every pattern (thresholds decay toward 0, never below, so
those neurons can never fire). These tests pin what the rule does on seeds 0-9 so that a
regression shows, and check that account of a miss; they do not hide the misses.
"""
import pytest

from fpwb.evaluation.convergence import learns_patterns, pattern_match, success_rate, train_on_patterns, why_missed
from fpwb.data import SIMPLE_PATTERNS

SEEDS = range(10)


@pytest.mark.parametrize("kwargs", [{}, dict(probs=(10, 1, 1, 1, 1, 1)), dict(mode="batch")],
                         ids=["uniform", "10:1", "batch"])
def test_twenty_neurons_find_the_six_patterns(kwargs):
    wins, runs = success_rate(SEEDS, **kwargs)
    assert wins >= 7, f"{wins}/{runs} seeds found every pattern"


def test_a_missed_pattern_lost_its_neurons_to_the_others():
    seed = next(s for s in SEEDS if not learns_patterns(s))
    report = why_missed(train_on_patterns(seed))
    assert report["missed"]
    assert report["never_fired"] == report["never_fired_all_negative"]
    assert report["holding_a_pattern"] + report["never_fired"] == 20


def test_pattern_match_is_one_for_the_patterns_themselves():
    weight = SIMPLE_PATTERNS.flatten(1)
    assert (pattern_match(weight) - 1).abs().max() < 1e-6
    assert pattern_match(weight[:1]).min() < 0.5
