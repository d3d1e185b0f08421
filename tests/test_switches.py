"""The switches beyond the plain rule (Oja's rule, k-winners-take-all, repulsion): every fast path
against the package's reference (``mode="reference"``: the rule's plain step, position by
position), for both layers and both modes; state, bad input and validation with the switches on."""
import functools
import math

import pytest
import torch
from sklearn.datasets import load_digits

from fpwb import FpConv2d, FpLinear
from reference import reference_linear
from state import assert_same_state, state

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

COMBOS = {
    "oja": dict(rule="oja"),
    "k2": dict(k_winners=2),
    "k2-out": dict(k_winners=2, k_output=True),
    "repel": dict(repulsion=0.05, repulsion_cosine=0.5),
    "all": dict(rule="oja", k_winners=3, k_output=True, repulsion=0.05, repulsion_cosine=0.5),
}


def digits(n=500):
    return torch.tensor(load_digits().images[:n], dtype=torch.float64).flatten(1) / 16  # (n, 64)


def digit_images(n=80):
    return torch.tensor(load_digits().images[:n], dtype=torch.float64).unsqueeze(1) / 16


@functools.lru_cache
def linear_reference(name):
    """The package's reference run: outputs (not normalised), weights and thresholds."""
    X = digits()
    layer = FpLinear(64, 30, seed=1, t_decay=0.005, dtype=torch.float64, normalize_output=False,
                     mode="reference", **COMBOS[name])
    return X, (layer(X), layer.weight.clone(), layer.threshold.clone())


@pytest.mark.parametrize("solver", [None, "gram", "direct", "rounds"])
@pytest.mark.parametrize("name", COMBOS)
def test_linear_sequential_matches_reference(name, solver):
    X, (ref_out, ref_W, ref_t) = linear_reference(name)
    layer = FpLinear(64, 30, t_decay=0.005, seed=1, dtype=torch.float64, normalize_output=False,
                     chunk_size=64, **COMBOS[name])
    layer.solver = solver
    if solver == "rounds" and name != "oja":
        before = state(layer)
        with pytest.raises(ValueError, match="interact"):
            layer(X)
        assert_same_state(before, state(layer))
        return
    out = layer(X)
    assert (ref_out > 0).sum() > 150, "the schedule should fire often"
    assert (out - ref_out).abs().max() < 1e-5
    assert (layer.weight - ref_W).abs().max() < 1e-5
    assert (layer.threshold - ref_t).abs().max() < 1e-5
    assert torch.equal(layer.fire_count, (ref_out > 0).sum(0))


def test_switches_change_the_run():
    """Each switch does something on this schedule (else the equivalence tests prove little)."""
    plain_out, plain_W, _ = reference_linear(
        FpLinear(64, 30, seed=1, dtype=torch.float64).weight, torch.ones(30, dtype=torch.float64),
        digits(), 0.02, 0.005)
    for name in COMBOS:
        _, (out, W, _) = linear_reference(name)
        assert (W - plain_W).abs().max() > 1e-3, name
    assert ((linear_reference("k2-out")[1][0] > 0).sum(1) <= 2).all()
    assert ((linear_reference("k2")[1][0] > 0).sum(1) > 2).any()


@functools.lru_cache
def conv_reference(name):
    X = digit_images()
    X[3] = 0
    layer = FpConv2d(1, 6, 3, padding=1, seed=0, t_decay=0.02, dtype=torch.float64,
                     normalize_output=False, mode="reference", **COMBOS[name])
    return X, (layer(X), layer.weight.clone(), layer.threshold.clone())


@pytest.mark.parametrize("solver", [None, "gram", "direct", "rounds"])
@pytest.mark.parametrize("name", ["oja", "k2-out", "all"])
def test_conv_sequential_matches_reference(name, solver):
    X, (ref_out, ref_W, ref_t) = conv_reference(name)
    layer = FpConv2d(1, 6, 3, padding=1, t_decay=0.02, seed=0, dtype=torch.float64,
                     normalize_output=False, chunk_size=300, **COMBOS[name])
    layer.solver = solver
    if solver == "rounds" and name != "oja":
        with pytest.raises(ValueError, match="interact"):
            layer(X)
        return
    out = layer(X)
    assert (ref_out > 0).sum() > 1500
    assert (out - ref_out).abs().max() < 1e-5
    assert (layer.weight - ref_W).abs().max() < 1e-5
    assert (layer.threshold - ref_t).abs().max() < 1e-5


@pytest.mark.parametrize("name", COMBOS)
def test_linear_batch_solvers_agree_and_chunks_of_one_are_the_reference(name):
    """Batch mode has two solvers (compiled walk and sparse move; tensors): they agree; and a
    batch chunk of one sample is the sequential rule, i.e. the reference."""
    X = digits(400)
    runs = {}
    for solver in ("compiled", "tensor"):
        layer = FpLinear(64, 30, t_decay=0.01, mode="batch", chunk_size=32, seed=3,
                         dtype=torch.float64, normalize_output=False, **COMBOS[name])
        layer.solver = solver
        runs[solver] = (layer(X), layer.weight.clone(), layer.threshold.clone())
    assert (runs["compiled"][0] > 0).sum() > 100
    for a, b in zip(runs["compiled"], runs["tensor"]):
        assert (a - b).abs().max() < 1e-9
    X, (ref_out, ref_W, ref_t) = linear_reference(name)
    single = FpLinear(64, 30, t_decay=0.005, mode="batch", chunk_size=1, seed=1, dtype=torch.float64,
                      normalize_output=False, **COMBOS[name])
    assert (single(X) - ref_out).abs().max() < 1e-9
    assert (single.weight - ref_W).abs().max() < 1e-9
    assert (single.threshold - ref_t).abs().max() < 1e-9


def test_plain_reference_mode_is_the_naive_reference():
    """The package's reference walk of the plain rule equals the independent naive one."""
    X = digits()
    layer = FpLinear(64, 30, seed=1, t_decay=0.005, dtype=torch.float64, normalize_output=False,
                     mode="reference")
    start_W, start_t = layer.weight.clone(), layer.threshold.clone()
    out = layer(X)
    ref_out, ref_W, ref_t = reference_linear(start_W, start_t, X, 0.02, 0.005)
    assert (out - ref_out).abs().max() < 1e-12
    assert (layer.weight - ref_W).abs().max() < 1e-12
    assert (layer.threshold - ref_t).abs().max() < 1e-12


def test_conv_batch_with_switches_learns_and_limits_output():
    X = digit_images(100)
    layer = FpConv2d(1, 6, 3, padding=1, mode="batch", t_decay=0.01, seed=0, k_winners=1,
                     k_output=True, repulsion=0.1)
    before = layer.weight.clone()
    out = layer(X.float())
    assert not torch.equal(before, layer.weight)
    assert ((out != 0).sum(1) <= 1).all(), "one winner per location"


@pytest.mark.parametrize("name", ["k2-out", "all"])
def test_sequential_is_independent_of_batching(name):
    X = digits(400)
    whole = FpLinear(64, 30, t_decay=0.005, seed=2, dtype=torch.float64, **COMBOS[name])
    parts = FpLinear(64, 30, t_decay=0.005, seed=2, dtype=torch.float64, chunk_size=7, **COMBOS[name])
    out_whole = whole(X)
    out_parts = torch.cat([parts(x) for x in X.split(90)])
    assert (out_whole - out_parts).abs().max() < 1e-9
    assert (whole.weight - parts.weight).abs().max() < 1e-9


def test_oja_rows_stay_near_unit_length():
    X = digits(1797)
    layer = FpLinear(64, 30, t_decay=0.005, seed=0, rule="oja", w_boost=0.05)
    layer(X.float())
    norms = layer.weight.norm(dim=1)
    assert (layer.fire_count > 0).sum() > 20
    assert (norms - 1).abs().max() < 0.05, "Oja's rule keeps rows near unit length"
    assert (norms - 1).abs().max() > 1e-6, "but does not renormalise them (documented)"


def test_repulsion_pushes_a_learner_away_from_its_twin():
    weight = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1, 0], [1.0, 0.12, 0], [0, 0, 1.0]]), dim=1)
    x = torch.tensor([[1.0, 0.5, 0.0]])
    cosines = []
    for repulsion in (0.0, 0.05):
        layer = FpLinear(3, 3, seed=0, k_winners=1, repulsion=repulsion, repulsion_cosine=0.9,
                         dtype=torch.float64)
        layer.weight.copy_(weight)
        layer.threshold.fill_(0.5)
        layer(x.double())
        cosines.append(float(layer.weight[0] @ layer.weight[1]))
    assert cosines[0] > 0.999 and cosines[1] < 0.999


def test_frozen_k_output_keeps_k_winners():
    X = digits(600).float()
    layer = FpLinear(64, 30, t_decay=0.01, seed=0, k_winners=3, k_output=True)
    layer(X[:400])
    layer.freeze()
    before = state(layer)
    out = layer(X[400:])
    assert_same_state(before, state(layer))
    assert ((out != 0).sum(1) <= 3).all() and ((out != 0).sum(1) == 3).any()
    layer.k_output = False
    assert ((layer(X[400:]) != 0).sum(1) > 3).any()


@pytest.mark.parametrize("make", [lambda **kw: FpLinear(64, 20, **kw),
                                  lambda **kw: FpConv2d(1, 4, 3, **kw)], ids=["linear", "conv"])
def test_state_dict_round_trip_with_switches(make):
    X = digit_images(120).float()
    X = X.flatten(1) if make(seed=0).__class__ is FpLinear else X
    kwargs = dict(t_decay=0.01, **COMBOS["all"])
    layer = make(seed=0, **kwargs)
    layer(X[:60])
    copy = make(seed=9, **kwargs)
    copy.load_state_dict(layer.state_dict())
    assert_same_state(state(layer), state(copy))
    assert torch.equal(layer(X[60:]), copy(X[60:]))
    assert_same_state(state(layer), state(copy))


@pytest.mark.parametrize("mode", ["sequential", "batch"])
@pytest.mark.parametrize("bad, message", [
    (lambda: torch.ones(3, 7), r"\(batch, 6\)"),
    (lambda: torch.tensor([[1, 2, math.nan, 0, 0, 0.]]), "NaN or Inf"),
    (lambda: torch.ones(2, 6, dtype=torch.bool), "real-valued"),
])
def test_bad_input_is_rejected_with_state_untouched(bad, message, mode):
    layer = FpLinear(6, 4, t_decay=0.01, seed=0, mode=mode, **COMBOS["all"])
    layer(torch.rand(50, 6))
    before = state(layer)
    with pytest.raises(ValueError, match=message):
        layer(bad())
    assert_same_state(before, state(layer))


def test_conv_bad_input_with_switches_changes_nothing():
    layer = FpConv2d(2, 4, 3, t_decay=0.01, seed=0, k_winners=1, repulsion=0.1)
    layer(torch.rand(5, 2, 8, 8))
    before = state(layer)
    with pytest.raises(ValueError, match="thresholds exist"):
        layer(torch.rand(2, 2, 9, 8))
    assert_same_state(before, state(layer))


@pytest.mark.parametrize("kwargs, message", [
    (dict(rule="hebb"), "rule"),
    (dict(k_winners=0), "k_winners"),
    (dict(k_winners=2.0), "k_winners"),
    (dict(k_winners=True), "k_winners"),
    (dict(k_output=True), "k_output"),
    (dict(k_winners=2, k_output=1), "k_output"),
    (dict(repulsion=-0.1), "repulsion"),
    (dict(repulsion=math.inf), "repulsion"),
    (dict(repulsion="a"), "repulsion"),
    (dict(repulsion_cosine=1.0), "repulsion_cosine"),
    (dict(repulsion_cosine=-1.5), "repulsion_cosine"),
])
def test_bad_switches_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FpLinear(6, 4, **kwargs)
    with pytest.raises(ValueError, match=message):
        FpConv2d(1, 4, 3, **kwargs)


def test_bad_switch_assignment_keeps_old_value():
    layer = FpLinear(6, 4, k_winners=2, k_output=True)
    with pytest.raises(ValueError, match="k_output"):
        layer.k_winners = None
    assert layer.k_winners == 2
    with pytest.raises(ValueError, match="rule"):
        layer.rule = "x"
    assert layer.rule.name == "frontprop"
    layer.repulsion = 0.2
    assert layer.repulsion == 0.2


def test_repr_shows_switches_only_when_set():
    plain = repr(FpLinear(6, 4))
    assert "rule" not in plain and "k_winners" not in plain and "repulsion" not in plain
    text = repr(FpConv2d(1, 4, 3, rule="oja", k_winners=2, k_output=True, repulsion=0.1))
    for part in ("rule=oja", "k_winners=2", "k_output=True", "repulsion=0.1", "repulsion_cosine=0.9"):
        assert part in text


@CUDA
def test_cuda_matches_cpu_with_switches():
    X = digits(300)
    cpu = FpLinear(64, 30, t_decay=0.005, seed=0, dtype=torch.float64, **COMBOS["all"])
    gpu = FpLinear(64, 30, t_decay=0.005, seed=0, dtype=torch.float64, device="cuda", **COMBOS["all"])
    assert (cpu(X) - gpu(X.cuda()).cpu()).abs().max() < 1e-9
    assert (cpu.weight - gpu.weight.cpu()).abs().max() < 1e-9
