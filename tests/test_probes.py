"""Probes, baselines, diagnostics and the probe table, on digits."""
import pytest
import torch

from fpwb import FpConv2d, FpLinear
from fpwb import baselines
from fpwb.evaluation import diagnostics
from fpwb.data import flatten, load
from fpwb.evaluation.probe_table import COLUMNS, probe_table, summary_markdown
from fpwb.evaluation.probes import READOUTS, embed, knn_probe, linear_probe


@pytest.fixture(scope="module")
def digits():
    (X, y), (Xt, yt) = load("digits", "train"), load("digits", "test")
    return flatten(X), y, flatten(Xt), yt


@pytest.fixture(scope="module")
def trained(digits):
    """An FpLinear that has learned on digits long enough for its thresholds to let it fire."""
    X = digits[0]
    layer = FpLinear(64, 50, w_boost=0.05, t_decay=0.002, seed=0)
    for _ in range(3):
        layer(X)
    assert diagnostics.fired_share(layer) > 0.5
    return layer


def state(layer):
    return {k: v.clone() for k, v in layer.state_dict().items()}, layer.training, layer.frozen


@pytest.mark.parametrize("readout", READOUTS)
def test_embed_leaves_the_model_bit_identical(trained, digits, readout):
    before = state(trained)
    F = embed(trained, digits[0][:300], batch_size=128, readout=readout)
    after = state(trained)
    assert F.shape == (300, 50) and torch.isfinite(F).all()
    assert before[1:] == after[1:] and before[0].keys() == after[0].keys()
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])


def test_readouts_follow_their_definitions(trained, digits):
    X = digits[0][:200]
    unit = X / X.norm(dim=1, keepdim=True)
    y = unit @ trained.weight.T
    assert torch.allclose(embed(trained, X, readout="linear"), y, atol=1e-6)
    assert torch.allclose(embed(trained, X, readout="relu"), y.clamp_min(0), atol=1e-6)
    fired = embed(trained, X, readout="fired")
    assert torch.equal(fired != 0, y >= trained.threshold)
    topk = embed(trained, X, readout="topk", k=7)
    assert ((topk != 0).sum(1) == 7).all()
    assert torch.allclose(topk.max(1).values, y.max(1).values)
    assert ((embed(trained, X, readout="topk") != 0).sum(1) == 5).all()  # 10% of 50


def test_embed_on_conv_and_bad_inputs(digits):
    conv = FpConv2d(1, 4, 3, seed=0)
    images = digits[0][:20].view(20, 1, 8, 8)
    with pytest.raises(ValueError, match="no thresholds"):
        embed(conv, images, readout="fired")
    assert embed(conv, images, readout="relu").shape == (20, 4 * 6 * 6)
    assert conv.threshold is None  # still untouched
    with pytest.raises(ValueError, match="readout"):
        embed(FpLinear(64, 3), digits[0], readout="softmax")


def test_raw_pixel_probe_on_digits(digits):
    result = linear_probe(*digits)
    assert result["accuracy"] >= 0.95 and result["converged"]
    assert result["iterations"] <= result["max_iter"]
    again = linear_probe(*digits)
    assert again["accuracy"] == result["accuracy"]  # deterministic


def test_sklearn_backend_agrees(digits):
    ours = linear_probe(*digits)
    theirs = linear_probe(*digits, backend="sklearn")
    assert abs(ours["accuracy"] - theirs["accuracy"]) <= 0.015


def test_knn_probe(digits):
    Xtr, ytr, Xte, yte = digits
    assert knn_probe(Xtr, ytr, Xte, yte, k=3)["accuracy"] > 0.95
    assert knn_probe(Xtr, ytr, Xtr[:50], ytr[:50], k=1)["accuracy"] == 1.0  # itself is nearest
    with pytest.raises(ValueError, match="k must be"):
        knn_probe(Xtr, ytr, Xte, yte, k=0)


@pytest.mark.parametrize("make", [
    lambda X: baselines.random_layer(64, 30, seed=1),
    lambda X: baselines.kmeans_layer(X, 30, seed=1),
    lambda X: baselines.pca_layer(X, 30, seed=1),
])
def test_each_baseline_runs_on_digits(digits, make):
    Xtr, ytr, Xte, yte = digits
    layer = make(Xtr)
    assert layer.out_features == 30 and layer.frozen
    assert torch.allclose(layer.weight.norm(dim=1), torch.ones(30))
    result = linear_probe(embed(layer, Xtr, readout="relu"), ytr, embed(layer, Xte, readout="relu"), yte)
    assert result["accuracy"] > 0.5


def test_pca_layer_caps_at_the_input_width(digits):
    assert baselines.pca_layer(digits[0], 100).out_features == 64


def test_diagnostics(trained, digits):
    Xtr, ytr = digits[:2]
    fresh = FpLinear(64, 10, seed=0)
    assert diagnostics.fired_share(fresh) == 0.0
    copies = baselines.layer_from_weights(torch.cat([fresh.weight, fresh.weight[:2] + 0.01]))
    assert diagnostics.redundancy(copies) == {"pairs": 2, "neurons": 4 / 12, "cosine": 0.95}
    assert torch.equal(diagnostics.redundant_pairs(copies), torch.tensor([[0, 10], [1, 11]]))
    counts = diagnostics.class_coverage(trained, Xtr, ytr)
    assert counts.shape == (50, 10)
    fired = embed(trained, Xtr, readout="fired") != 0
    assert torch.equal(counts.sum(1), fired.sum(0))
    assert int(counts[:, 3].sum()) == int(fired[ytr == 3].sum())


def test_probe_table_on_digits(digits):
    rows = probe_table(digits, sizes=(10,), epochs=2, t_decay=0.002, w_boost=0.05, seeds=(0,),
                       progress=False)
    assert all(tuple(r) == COLUMNS for r in rows)
    methods = [(r["method"], r["readout"]) for r in rows]
    assert ("frontprop", "fired") in methods and ("random", "fired") not in methods
    assert ("backprop", "fired") not in methods and "forward_forward" not in dict(methods)
    assert methods.count(("raw", "pixels")) == 1 and len(rows) == 4 + 4 * 3 + 1
    raw = next(r for r in rows if r["method"] == "raw")
    assert raw["probe_acc"] >= 0.95 and raw["features"] == 64
    frontprop = next(r for r in rows if r["method"] == "frontprop")
    assert frontprop["fired"] > 0
    backprop = {r["readout"]: r for r in rows if r["method"] == "backprop"}
    assert backprop["relu"]["probe_acc"] > 0.85 and backprop["relu"]["cka"] is None
    # one CKA against the backprop layer per model, the same on each of its rows, in [0, 1]
    for method in ("frontprop", "random", "kmeans", "pca"):
        ckas = {r["cka"] for r in rows if r["method"] == method}
        assert len(ckas) == 1 and 0 <= ckas.pop() <= 1
    assert raw["cka"] is None
    assert "| frontprop | fired |" in summary_markdown(rows)
    assert "| backprop |" not in summary_markdown(rows, "cka")
    with pytest.raises(ValueError, match="unknown methods"):
        probe_table(digits, methods=("sgd",))


def test_forward_forward_in_the_probe_table(digits):
    Xtr, ytr, Xte, yte = digits
    rows = probe_table((Xtr[:300], ytr[:300], Xte[:200], yte[:200]), sizes=(16,), seeds=(0,),
                       methods=("forward_forward", "backprop"), progress=False)
    (ff,) = [r for r in rows if r["method"] == "forward_forward"]
    assert ff["readout"] == "neutral" and ff["features"] == 32 and ff["redundant_pairs"] is None
    assert ff["probe_acc"] > 0.7 and 0 <= ff["cka"] <= 1
    assert "| forward_forward | neutral |" in summary_markdown(rows)


def test_learned_share_counts_the_neurons_that_moved(digits):
    layer = FpLinear(64, 40, w_boost=0.05, t_decay=0.002, seed=0)
    start = layer.weight.clone()
    assert diagnostics.learned_share(layer, start) == 0.0
    layer(digits[0].flatten(1))
    moved = diagnostics.learned_neurons(layer, start)
    assert torch.equal(moved, (layer.weight - start).abs().amax(1) > 1e-6)
    assert 0 < diagnostics.learned_share(layer, start) <= diagnostics.fired_share(layer)
    with pytest.raises(ValueError, match="initial_weight"):
        diagnostics.learned_share(layer, start[:3])
