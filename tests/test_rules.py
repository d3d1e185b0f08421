"""The learning rules of fpwb.rules: each trains both layers in every mode it supports, its fast
paths equal its own reference (float64, 1e-5, on real data, through the silent start and the
dense phase), its state round-trips, and the claims of its docstring hold."""
import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.cluster import MiniBatchKMeans
from sklearn.datasets import load_digits

from fpwb import FpConv2d, FpLinear, rules
from state import assert_same_state, state

BUILT_IN = ["frontprop", "oja", "soft_wta", "rank_k", "per_neuron_rate", "homeostatic"]
#: Settings that make each rule learn visibly on a short digits stream.
SETTINGS = {"soft_wta": dict(w_boost=0.05), "rank_k": dict(w_boost=0.05)}


def digits(n=400):
    return torch.tensor(load_digits().images[:n], dtype=torch.float64).flatten(1) / 16  # (n, 64)


def digit_images(n=40):
    return torch.tensor(load_digits().images[:n], dtype=torch.float64).unsqueeze(1) / 16


def linear(rule, mode, **kwargs):
    args = dict(t_decay=0.02, seed=1, dtype=torch.float64, normalize_output=False, chunk_size=64,
                rule=rule, mode=mode, **SETTINGS.get(rule, {}))
    return FpLinear(64, 30, **{**args, **kwargs})


def conv(rule, mode, **kwargs):
    args = dict(padding=1, t_decay=0.02, seed=0, dtype=torch.float64, normalize_output=False,
                chunk_size=300, rule=rule, mode=mode, **SETTINGS.get(rule, {}))
    return FpConv2d(1, 6, 3, **{**args, **kwargs})


def run(layer, X):
    out = layer(X)
    return out, layer.weight.clone(), layer.threshold.clone(), layer.learn_count.clone()


def assert_close(a, b, tol=1e-5):
    """Outputs, weights, thresholds and learn counts agree within tol."""
    for name, x, y in zip(("output", "weight", "threshold", "learn_count"), a, b):
        gap = float((x.double() - y.double()).abs().max())
        assert gap <= tol, f"{name} differs by {gap:g}"


@functools.lru_cache
def linear_reference(rule, n=400, **kwargs):
    return run(linear(rule, "reference", **kwargs), digits(n))


@functools.lru_cache
def conv_reference(rule):
    return run(conv(rule, "reference"), digit_images())


def test_the_built_in_rules_are_listed():
    assert set(BUILT_IN) <= set(rules.names())
    assert all(isinstance(rules.get(name), rules.Rule) for name in rules.names())
    with pytest.raises(ValueError, match="rule must be one of"):
        rules.get("hebb")


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_rule_trains_both_layers_in_every_mode(name):
    rule = rules.get(name)
    for mode in rule.modes:
        for layer, X in ((linear(name, mode, t_decay=0.01), digits(400)),
                         (conv(name, mode), digit_images(40))):
            before = layer.weight.clone()
            out = layer(X)
            assert torch.isfinite(out).all() and torch.isfinite(layer.weight).all()
            assert (layer.weight - before).abs().max() > 1e-3, (name, mode, type(layer).__name__)
            assert int(layer.learn_count.sum()) > 0
    if "batch" not in rule.modes:
        with pytest.raises(ValueError, match="no batch form"):
            linear(name, "batch")


def test_the_reference_run_starts_silent_and_becomes_dense():
    """The equivalence tests below cover the silent start (nothing fires) and the dense phase."""
    out = linear_reference("frontprop")[0]
    fired_per_sample = (out != 0).sum(1)
    assert (fired_per_sample[:5] == 0).all()
    assert fired_per_sample[-100:].float().mean() > 3


@pytest.mark.parametrize("solver", [None, "gram", "direct", "rounds"])
@pytest.mark.parametrize("name", ["frontprop", "oja", "per_neuron_rate"])
def test_sequential_solvers_equal_the_reference(name, solver):
    layer = linear(name, "sequential")
    layer.solver = solver
    assert_close(run(layer, digits()), linear_reference(name))


@pytest.mark.parametrize("name", ["frontprop", "oja", "per_neuron_rate"])
def test_sequential_with_winners_equals_the_reference(name):
    assert_close(run(linear(name, "sequential", k_winners=1), digits()),
                 linear_reference(name, k_winners=1))


@pytest.mark.parametrize("solver", [None, "direct", "gram", "rounds"])
@pytest.mark.parametrize("name", ["oja", "per_neuron_rate"])
def test_conv_sequential_solvers_equal_the_reference(name, solver):
    layer = conv(name, "sequential")
    layer.solver = solver
    assert_close(run(layer, digit_images()), conv_reference(name))


@pytest.mark.parametrize("name", ["soft_wta", "rank_k", "homeostatic"])
def test_rules_without_scans_run_the_reference_in_sequential_mode(name):
    assert_close(run(linear(name, "sequential"), digits()), linear_reference(name), tol=0)
    assert_close(run(conv(name, "sequential"), digit_images()), conv_reference(name), tol=0)


@pytest.mark.parametrize("name", [n for n in BUILT_IN if rules.get(n).has_batch])
def test_batch_chunks_of_one_sample_are_the_reference(name):
    """A batch chunk of one sample of FpLinear is one position: the sequential rule itself."""
    assert_close(run(linear(name, "batch", chunk_size=1), digits(150)), linear_reference(name, n=150))


@pytest.mark.parametrize("name", ["frontprop", "oja", "per_neuron_rate", "homeostatic"])
@pytest.mark.parametrize("make, X", [(linear, digits()), (conv, digit_images())], ids=["linear", "conv"])
def test_batch_solvers_agree(name, make, X):
    runs = []
    for solver in ("compiled", "tensor") if rules.get(name).plain_thresholds else (None, "tensor"):
        layer = make(name, "batch")
        layer.solver = solver
        runs.append(run(layer, X))
    assert (runs[0][0] != 0).sum() > 100
    assert_close(runs[0], runs[1], tol=1e-9)


@pytest.mark.parametrize("name", BUILT_IN)
def test_state_round_trips_with_rule_state(name):
    X = digits(300)
    layer = linear(name, "sequential")
    layer(X[:150])
    copy = linear(name, "sequential", seed=7)
    copy.load_state_dict(layer.state_dict())
    assert_same_state(state(layer), state(copy))
    assert torch.equal(layer(X[150:]), copy(X[150:]))
    assert_same_state(state(layer), state(copy))
    assert "learn_count" in layer.state_dict()


def test_per_neuron_rate_with_one_winner_is_online_kmeans():
    """With offset 1, k_winners=1 and no renormalisation each neuron is the running mean of the
    inputs it won: scikit-learn's MiniBatchKMeans with batches of one does the same arithmetic."""
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(8, dtype=torch.float64)[:3] * 3 + 0.2  # three well-separated directions
    labels = torch.cat([torch.arange(3), torch.randint(0, 3, (117,), generator=g)])
    X = (centres[labels] +
         0.05 * torch.randn(120, 8, dtype=torch.float64, generator=g))
    X = X / X.norm(dim=1, keepdim=True)  # the layer scales its inputs to unit length anyway
    start = centres / centres.norm(dim=1, keepdim=True)
    layer = FpLinear(8, 3, rule=rules.PerNeuronRate(normalize=False), k_winners=1, t_decay=0.99,
                     dtype=torch.float64, normalize_output=False)
    layer.weight.copy_(start)
    layer.threshold.zero_()  # every neuron fires on every sample (all cosines are positive here)
    layer(X)
    kmeans = MiniBatchKMeans(n_clusters=3, init=start.numpy(), n_init=1, batch_size=1,
                             reassignment_ratio=0.0, random_state=0)
    kmeans.partial_fit(X[:3].numpy())  # its first call needs a sample per cluster (one of each here)
    for x in X[3:].numpy():
        kmeans.partial_fit(x[None])
    assert np.abs(layer.weight.numpy() - kmeans.cluster_centers_).max() < 1e-12
    assert layer.learn_count.tolist() == np.bincount(kmeans.predict(X.numpy()), minlength=3).tolist()


def test_homeostatic_thresholds_let_an_opposed_neuron_fire():
    X = digits(400)
    opposed = -X[:50].mean(0)  # negative cosine with every digit
    for rule, fires in (("frontprop", False), (rules.Homeostatic(target_rate=0.05, gain=0.2), True)):
        layer = FpLinear(64, 5, rule=rule, t_decay=0.005, seed=0, dtype=torch.float64)
        layer.weight[0] = opposed / opposed.norm()
        layer(X)
        assert (int(layer.fire_count[0]) > 0) is fires, rule
    assert float(layer.threshold[0]) < 0, "its threshold went below zero to let it fire"


def test_soft_wta_moves_every_neuron_and_losers_away():
    x = torch.nn.functional.normalize(torch.rand(64, dtype=torch.float64), dim=0)
    layer = FpLinear(64, 10, rule=rules.SoftWTA(temperature=0.5), w_boost=0.1, seed=0,
                     dtype=torch.float64)
    before = layer.weight.clone()
    layer(x.unsqueeze(0))
    moved = (layer.weight - before).abs().amax(1)
    assert (moved > 0).all(), "every neuron learns at every position"
    winner = int((before @ x).argmax())
    closer = layer.weight @ x - before @ x
    assert closer[winner] > 0 and (closer[torch.arange(10) != winner] < 0).all()


def test_rank_k_pushes_the_kth_neuron_away():
    x = torch.nn.functional.normalize(torch.rand(64, dtype=torch.float64), dim=0)
    layer = FpLinear(64, 10, rule=rules.RankK(rank=3, delta=0.5), w_boost=0.1, seed=0,
                     dtype=torch.float64)
    before = layer.weight.clone()
    order = (before @ x).argsort(descending=True)
    layer(x.unsqueeze(0))
    change = layer.weight @ x - before @ x
    assert change[order[0]] > 0 and change[order[2]] < 0
    assert torch.equal(layer.weight[order[[1, 3, 4]]], before[order[[1, 3, 4]]])
    assert layer.learn_count.tolist() == [1 if j in order[[0, 2]].tolist() else 0 for j in range(10)]


@pytest.mark.parametrize("kwargs, message", [
    (dict(rule="soft_wta", k_winners=2), "picks its own learners"),
    (dict(rule="rank_k", repulsion=0.1), "picks its own learners"),
    (dict(rule="oja", w_boost=3.0), "w_boost below 1"),
    (lambda: dict(rule=rules.RankK(rank=1)), "rank"),
    (lambda: dict(rule=rules.SoftWTA(temperature=0)), "temperature"),
    (lambda: dict(rule=rules.PerNeuronRate(offset=-1)), "offset"),
    (lambda: dict(rule=rules.Homeostatic(target_rate=2)), "target_rate"),
])
def test_bad_rule_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FpLinear(6, 4, **(kwargs() if callable(kwargs) else kwargs))


def test_bad_rule_assignment_keeps_the_old_rule():
    layer = FpLinear(6, 4, k_winners=2)
    with pytest.raises(ValueError, match="picks its own learners"):
        layer.rule = "soft_wta"
    assert layer.rule == rules.Frontprop()
    layer.mode = "batch"
    layer.k_winners = None
    layer.rule = "soft_wta"
    with pytest.raises(ValueError, match="k_winners"):
        layer.k_winners = 1


@pytest.mark.parametrize("solver, mode, rule, message", [
    ("grams", "sequential", "frontprop", "solver must be None or one of"),
    ("compiled", "sequential", "frontprop", "mode 'sequential'"),
    ("gram", "sequential", "soft_wta", "runs solver='reference'"),
    ("compiled", "batch", "homeostatic", "solver='tensor'"),
])
def test_solver_is_validated(solver, mode, rule, message):
    layer = FpLinear(64, 10, mode=mode, rule=rule, seed=0)
    try:
        layer.solver = solver
    except ValueError as error:
        assert message in str(error)
        return
    before = state(layer)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        layer(digits(20).float())
    assert_same_state(before, state(layer))


def test_rule_repr_and_equality():
    assert repr(rules.get("frontprop")) == "frontprop"
    assert repr(rules.SoftWTA(temperature=0.2)) == "soft_wta(temperature=0.2, anti_hebbian=True)"
    assert rules.RankK(rank=3) == rules.RankK(rank=3) != rules.RankK(rank=4)
    assert "rule=homeostatic(" in repr(FpLinear(4, 2, rule="homeostatic"))


def test_the_user_rule_example_runs():
    """examples/my_rule.py: a rule written outside the package trains both layers and is probed."""
    script = Path(__file__).resolve().parents[1] / "examples" / "my_rule.py"
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and all("hebb rule 0." in line and "untrained 0." in line for line in lines)
