"""fpwb.nets: each piece between Fp layers on small data, the twins of the protocol, a tiny run."""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from fpwb import FpConv2d
from fpwb.data import load
from fpwb.evaluation.probes import embed
from fpwb.nets import ChannelStandardize, PatchWhiten, Readout, RePU, Triangle, pool
from fpwb.nets import protocol


def images(n=120):
    return load("digits", "train")[0][:n]  # (n, 1, 8, 8)


def test_standardize_collects_exact_moments_in_training_mode_only():
    x = torch.randn(40, 3, 5, 5) * torch.tensor([1.0, 3.0, 0.5]).view(1, 3, 1, 1) + 2.0
    whole, halves = ChannelStandardize(3), ChannelStandardize(3)
    out = whole(x)
    halves(x[:15]), halves(x[15:])
    assert torch.allclose(whole.stats.mean, halves.stats.mean) and torch.allclose(whole.stats.moment, halves.stats.moment)
    assert torch.allclose(out.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(out.var((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-3)
    whole.eval()
    whole(x + 5)
    assert int(whole.stats.count) == 40 * 25, "eval mode leaves the statistics alone"
    copy = ChannelStandardize(3)
    copy.load_state_dict(whole.state_dict())
    assert torch.equal(copy.eval()(x), whole(x))
    with pytest.raises(ValueError, match="no statistics"):
        ChannelStandardize(3).eval()(x)
    with pytest.raises(ValueError, match=r"\(batch, 3"):
        whole(torch.zeros(2, 4, 3, 3))


def test_patch_whiten_decorrelates_patches_and_round_trips():
    x = images(200)
    white = PatchWhiten(1, 3, padding=1, center=False, eps=1e-6)
    out = white(x)  # (n, 9, 8, 8)
    assert out.shape == (200, 9, 8, 8)
    rows = out.permute(0, 2, 3, 1).reshape(-1, 9).double()
    assert torch.allclose(torch.cov(rows.T, correction=0), torch.eye(9, dtype=torch.float64), atol=1e-3)
    centred = PatchWhiten(1, 3, padding=1, zca=False)(x)
    assert torch.allclose(centred.sum(1), torch.zeros(200, 8, 8), atol=1e-5), "each patch minus its mean"
    copy = PatchWhiten(1, 3, padding=1, center=False, eps=1e-6)
    copy.load_state_dict(white.state_dict())
    assert torch.allclose(copy.eval()(x[:5]), white.eval()(x[:5]))
    # the next layer, a 1x1 FpConv2d, sees each whitened patch as its input vector
    layer = FpConv2d(9, 4, 1, seed=0)
    assert layer(out[:2]).shape == (2, 4, 8, 8)


def test_activations_by_hand():
    x = torch.tensor([[[[1.0]], [[2.0]], [[6.0]]]])  # (1, 3, 1, 1), channel mean 3
    assert torch.equal(Triangle()(x).flatten(), torch.tensor([0.0, 0.0, 3.0]))
    assert torch.equal(Triangle(2.0)(x).flatten(), torch.tensor([0.0, 0.0, 9.0]))
    assert torch.equal(RePU(2.0)(x - 2).flatten(), torch.tensor([0.0, 0.0, 16.0]))
    with pytest.raises(ValueError, match="power"):
        RePU(0)


def test_pools():
    x = torch.arange(64.0).view(1, 1, 8, 8)
    assert pool("max")(x).shape == (1, 1, 4, 4) and float(pool("max")(x).max()) == 63
    assert pool("quadrant")(x).shape == (1, 1, 2, 2)
    assert float(pool("quadrant")(x)[0, 0, 0, 0]) == x[..., :4, :4].mean()
    assert isinstance(pool("avg", 2, 2, 0), nn.AvgPool2d)
    with pytest.raises(ValueError, match="pool kind"):
        pool("sum")


@pytest.mark.parametrize("readout", ["linear", "relu", "topk"])
def test_readout_matches_the_probe_readout_and_learns_like_the_layer(readout):
    x = images(60)
    layer = FpConv2d(1, 4, 3, padding=1, t_decay=0.02, seed=0)
    wrapped = Readout(FpConv2d(1, 4, 3, padding=1, t_decay=0.02, seed=0), readout)
    out = wrapped(x)  # learns on x, then reads the cosines
    layer(x)
    assert torch.equal(wrapped.layer.weight, layer.weight)
    assert torch.allclose(out.flatten(1), embed(layer, x, readout=readout))
    fired = Readout(FpConv2d(1, 4, 3, padding=1, seed=0), "fired")
    assert torch.equal(fired.eval()(x), FpConv2d(1, 4, 3, padding=1, seed=0).eval()(x))
    with pytest.raises(ValueError, match="readout"):
        Readout(layer, "softmax")


SPEC = protocol.smoke_spec(mode="batch", t_decay=0.02, w_boost=0.05)


def test_the_untrained_twin_has_exactly_the_architecture_of_the_trained_net():
    X = images()
    trained, _ = protocol.build(SPEC, 3, seed=4)
    untrained, _ = protocol.build(SPEC, 3, seed=4)
    start = [w.clone() for w in protocol._initial(trained)]
    trained.fit(X, schedule="greedy")
    for layer in untrained.fp_layers():
        layer.freeze()
    untrained.fit(X, schedule="greedy")
    assert protocol.architecture(trained) == protocol.architecture(untrained)
    assert all(torch.equal(a, b.weight) for a, b in zip(start, untrained.fp_layers())), "its start"
    assert not any(torch.equal(a, b.weight) for a, b in zip(start, trained.fp_layers()))
    assert set(trained.state_dict()) >= set(untrained.state_dict())
    for k, v in untrained.state_dict().items():
        assert v.shape == trained.state_dict()[k].shape, k


def test_pool_stride_per_stage_sets_each_stage_map_and_is_checked():
    """A stride-1 last pool keeps stage 3's map (28 -> 14 -> 7 -> 6) larger than a 4x4 probe grid."""
    spec = protocol.NetSpec(channels=(2, 2, 2), kernel_sizes=(3, 3, 3), pool_stride=[2, 2, 1],
                            layer={"mode": "batch"})
    assert spec.pool_stride == (2, 2, 1) and [spec.stride_of(k) for k in range(3)] == [2, 2, 1]
    assert "pool max 4/(2, 2, 1)/1" in spec.describe()
    stack, ends = protocol.build(spec, seed=0)
    x = torch.rand(3, 1, 28, 28)
    for stop in stack.fp_indices:
        stack.collect_statistics(x, stop=stop)
    stack.eval()
    sizes = []
    for i, module in enumerate(stack.layers):
        x = module(x)
        sizes += [x.shape[-1]] if i in ends else []
    assert sizes == [14, 7, 6]
    assert protocol.NetSpec(pool_stride=2).stride_of(2) == 2
    assert "pool max 4/2/1" in protocol.NetSpec().describe()
    with pytest.raises(ValueError, match="one per stage \\(3\\), got \\(2, 1\\)"):
        protocol.NetSpec(pool_stride=(2, 1))


def test_rates_per_stage_reach_each_stage_and_are_checked():
    """w_boost and t_decay: one value for every stage, or one per stage (spec.layer or build's
    keywords); a list of another length is refused before any layer is made."""
    spec = protocol.smoke_spec(mode="batch", w_boost=[0.4, 0.2, 0.05], t_decay=0.01)
    stack, _ = protocol.build(spec, seed=0)
    assert [(f.w_boost, f.t_decay) for f in stack.fp_layers()] == [(0.4, 0.01), (0.2, 0.01), (0.05, 0.01)]
    stack, _ = protocol.build(spec, 2, seed=0, t_decay=(0.03, 0.02, 0.01))
    assert [(f.w_boost, f.t_decay) for f in stack.fp_layers()] == [(0.4, 0.03), (0.2, 0.02)]
    same, _ = protocol.build(protocol.smoke_spec(mode="batch", w_boost=[0.05] * 3), seed=2)
    plain, _ = protocol.build(protocol.smoke_spec(mode="batch", w_boost=0.05), seed=2)
    X = images()
    same.fit(X, schedule="greedy")
    plain.fit(X, schedule="greedy")
    assert all(torch.equal(a.weight, b.weight) for a, b in zip(same.fp_layers(), plain.fp_layers()))
    with pytest.raises(ValueError, match="w_boost needs one number for every stage or one per stage \\(3\\), "
                                         "got \\[0.4, 0.2\\]"):
        protocol.smoke_spec(w_boost=(0.4, 0.2))
    with pytest.raises(ValueError, match="t_decay needs .* \\(3\\), got \\[0.1\\]"):
        protocol.build(SPEC, 1, t_decay=[0.1])


def test_greedy_prefix_is_the_shallower_net():
    """Why one deep net gives every depth: its first k stages are the k-stage net, bit for bit."""
    X = images()
    deep, _ = protocol.build(SPEC, 3, seed=1)
    shallow, _ = protocol.build(SPEC, 2, seed=1)
    deep.fit(X, epochs=2, schedule="greedy", seed=3)
    shallow.fit(X, epochs=2, schedule="greedy", seed=3)
    for k, v in shallow.state_dict().items():
        assert torch.equal(v, deep.state_dict()[k]), k


def test_imprinted_kernels_are_input_patches_and_kmeans_kernels_are_unit():
    X = images()
    stack, _ = protocol.build(SPEC, 2, seed=0)
    protocol.fit_kernels(stack, X, "imprint", sample=50)
    first = stack.fp_layers()[0]
    unit, valid = first.unit_patches(stack[0].eval()(X))
    patches = unit[valid]  # (P, K)
    for w in first.weight.view(first.out_channels, -1):
        assert float((patches @ w).max()) > 1 - 1e-5, "each kernel is one of the input patches"
    assert all(f.frozen for f in stack.fp_layers())
    means, _ = protocol.build(SPEC, 2, seed=0)
    protocol.fit_kernels(means, X, "kmeans", sample=50, patches=500)
    for f in means.fp_layers():
        assert torch.allclose(f.weight.flatten(1).norm(dim=1), torch.ones(f.out_channels), atol=1e-5)


def test_backprop_twin_computes_the_readout_cosines():
    X = images(20)
    stack, ends = protocol.build(SPEC, 2, seed=0)
    stack.collect_statistics(X, stop=stack.fp_indices[0])
    stack.collect_statistics(X, stop=stack.fp_indices[1])
    twin = protocol.backprop_twin(stack, SPEC.readout).eval()
    assert [type(m).__name__ for m in twin][1] == "CosineConv2d"
    ours = protocol.stage_features(stack, ends, X[:5], 2)
    theirs = protocol.stage_features(twin, ends, X[:5], 2)
    assert torch.allclose(ours[0], theirs[0], atol=1e-5)
    assert any(p.requires_grad for p in twin.parameters())


def test_a_tiny_run_has_every_method_and_depth():
    X, y, Xt, yt, _ = protocol.load_data("digits", n_train=150, n_test=60)
    result = protocol.run(protocol.smoke_spec(mode="batch", t_decay=0.02, w_boost=0.05), (X, y, Xt, yt),
                          frontprop=protocol.frontprop_variants(["frontprop"]), seeds=(0,),
                          depths=(1, 2), backprop_epochs=1, progress=False)
    rows = result["rows"]
    assert {r["method"] for r in rows} == {"frontprop", *protocol.KERNELS}
    assert {(r["depth"], r["stage"]) for r in rows} == {(1, 1), (2, 1), (2, 2)}
    assert all(0 <= r["probe"] <= 1 for r in rows)
    assert [r for r in rows if r["method"] == "frontprop"][0]["learned_share"] > 0
    assert "| frontprop | batch |" in protocol.table(rows)
    with pytest.raises(ValueError, match="kernel sources"):
        protocol.run(SPEC, (X, y, Xt, yt), frontprop={}, kernels=("pca",))


def test_table_shows_a_spread_only_over_several_seeds():
    """One seed has no spread: its cells give the mean alone, not a '± 0.00' that reads as measured."""
    row = dict(method="untrained", depth=1, stage=1, learned_share=None, redundant=None, mode="-")
    one = [dict(row, seed=0, probe=0.8)]
    assert "| untrained | - | 80.00 | +0.00 |" in protocol.table(one)
    two = [dict(row, seed=0, probe=0.8), dict(row, seed=1, probe=0.9)]
    assert "85.00 ± 7.07" in protocol.table(two)
    assert protocol.probe_cell({"mean": float("nan"), "std": 0.0, "n": 3}) == "diverged"


def test_combined_runs_keep_each_method_once_and_refuse_runs_that_disagree():
    def rows(method, probe):
        return [dict(method=method, seed=seed, depth=1, stage=1, probe=probe + seed / 100, learned_share=None,
                     redundant=None, features=4, seconds=float(seed), mode="-") for seed in (0, 1)]
    spec = {"channels": [4]}
    a = {"rows": rows("untrained", 0.8) + rows("frontprop", 0.7), "spec": spec}
    b = {"rows": rows("rank_k", 0.6) + [dict(r, seconds=9.0) for r in rows("untrained", 0.8)], "spec": spec}
    both = protocol.combine({"a": a, "b": b})
    assert [r["method"] for r in both] == ["frontprop", "frontprop", "rank_k", "rank_k", "untrained", "untrained"]
    assert [r["seconds"] for r in both if r["method"] == "untrained"] == [0.0, 1.0]  # a's rows, not b's
    other = {"rows": rows("untrained", 0.81), "spec": spec}
    with pytest.raises(ValueError, match="'untrained' has other results for seed 0 in run 'c' than in run 'a'"):
        protocol.combine({"a": a, "c": other})
    with pytest.raises(ValueError, match="different nets"):
        protocol.combine({"a": a, "d": dict(b, spec={"channels": [8]})})
    later = {"rows": [dict(r, seed=r["seed"] + 2) for r in a["rows"]], "spec": spec}  # seeds 2 and 3
    four = protocol.combine({"a": a, "later": later})
    assert [(r["method"], r["seed"]) for r in four] == [("frontprop", s) for s in range(4)] + [
        ("untrained", s) for s in range(4)]
    assert protocol.summary(four)[("untrained", 1, 1)]["n"] == 4
    with pytest.raises(ValueError, match="'untrained' has other results for seed 0 in run 'c'"):
        protocol.combine({"a": a, "later": later, "c": other})
    with pytest.raises(ValueError, match="different seeds \\(untrained: \\[0, 1\\], frontprop: \\[0, 1, 2, 3\\]\\)"):
        protocol.combine({"a": a, "f": {"rows": [r for r in later["rows"] if r["method"] == "frontprop"],
                                        "spec": spec}})


def test_rules_with_settings_are_methods_of_their_own():
    """A rule object is labelled by its name, plus its settings where they are not the defaults;
    deep_conv.py --rules makes such objects from name:setting=value,... and names what it refuses."""
    from fpwb.rules import RankK
    assert protocol.rule_label("rank_k") == protocol.rule_label(RankK()) == "rank_k"
    variants = protocol.frontprop_variants(["rank_k", RankK(rank=3, delta=0.2)])
    assert list(variants) == ["rank_k", "rank_k(rank=3, delta=0.2)"]
    assert variants["rank_k(rank=3, delta=0.2)"]["rule"] == RankK(rank=3, delta=0.2)

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "deep_conv.py"
    loader = importlib.util.spec_from_file_location("deep_conv_benchmark", path)
    benchmark = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(benchmark)
    assert benchmark.rule_option("soft_wta") == "soft_wta"
    assert benchmark.rule_option("rank_k:rank=3,delta=0.2") == RankK(rank=3, delta=0.2)
    for text, message in [("rank_x", "unknown rule 'rank_x'"), ("rank_k:rank=1", "rank must be an int >= 2"),
                          ("rank_k:foo=2", "rank_k has no setting foo; its settings are rank, delta"),
                          ("rank_k:rank", "setting=number pairs, got 'rank'"),
                          ("rank_k:delta=x", "setting=number pairs, got 'delta=x'")]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            benchmark.rule_option(text)


def test_benchmark_writes_table_rows_and_figure_and_redraws_the_figure(tmp_path):
    """benchmarks/deep_conv.py --smoke: the table with its command, every row (with the data it
    ran on) and the probe-against-depth figure; --replot draws the figure again from the rows."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "deep_conv.py"
    out = tmp_path / "deep.md"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}

    def run(*args):
        return subprocess.run([sys.executable, str(script), *args, "--out", str(out)], capture_output=True,
                              text=True, timeout=300, env=env)

    ignored = run("--smoke", "--channels", "8", "8", "8", "--pool", "avg")
    assert ignored.returncode == 2 and "would ignore --channels, --pool;" in ignored.stderr
    uneven = run("--smoke", "--w-boost", "0.1", "0.2")
    assert uneven.returncode == 2 and "--w-boost takes one value for every stage or one per stage (3)" in uneven.stderr
    assert not out.exists()
    done = run("--smoke")
    assert done.returncode == 0, done.stderr
    assert "Command: `python benchmarks/deep_conv.py --smoke --out" in out.read_text()
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["data"]["dataset"] == "digits" and {r["method"] for r in saved["rows"]} >= {"untrained", "kmeans"}
    figure = out.with_suffix(".png")
    assert figure.stat().st_size > 10_000
    figure.unlink()
    assert run("--replot").returncode == 0 and figure.is_file()
    first = json.loads(out.with_suffix(".json").read_text())
    out.with_suffix(".json").unlink()
    refused = run("--replot")
    assert refused.returncode == 2 and "written by an earlier run" in refused.stderr

    # A second run of the same protocol with other methods, then both as one table.
    (tmp_path / "first.json").write_text(json.dumps(first))
    out = tmp_path / "second.md"
    assert run("--smoke", "--rules", "rank_k", "--baselines", "untrained").returncode == 0
    out = tmp_path / "both.md"
    done = run("--combine", str(tmp_path / "first.json"), str(tmp_path / "second.json"))
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert text.count("| untrained | - |") == 1 and "| rank_k | batch |" in text and "Rows of 2 runs" in text
    assert "--rules rank_k --baselines untrained" in text
    assert out.with_suffix(".png").is_file()
    other = tmp_path / "other.json"
    other.write_text(json.dumps(dict(first, command=first["command"] + " --epochs 2")))
    refused = run("--combine", str(tmp_path / "first.json"), str(other))
    assert refused.returncode == 2 and "epochs differ" in refused.stderr
    out = tmp_path / "first.md"  # the table of a combination must not overwrite one of its runs
    before = (tmp_path / "first.json").read_text()
    refused = run("--combine", str(tmp_path / "first.json"), str(tmp_path / "second.json"))
    assert refused.returncode == 2 and "would overwrite" in refused.stderr
    assert (tmp_path / "first.json").read_text() == before
