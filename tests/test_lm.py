"""fpwb.lm: the Frontprop drop-in for a trained Linear, the tiny pretrained LM and its cache,
continued training by Frontprop / backprop / nothing. A seconds-long model throughout."""
import sys

import pytest
import torch
from torch import nn

from fpwb import FpLinear
from fpwb.lm import (ARMS, CORPORA, CheckpointCorruptError, FpDropIn, TinyConfig, adapt,
                     calibration_inputs, convert, corpus_ids, corpus_text, generate, load_hf,
                     load_or_pretrain, perplexity, random_windows, trainable_only)
from fpwb.lm import model as lm_model

#: A model that pretrains in a few seconds on 2 cores.
SMALL = TinyConfig(context=32, d_model=32, n_layers=2, n_heads=2, steps=40, batch_size=16, lr=1e-2)
#: Before any learning, the swap of every MLP up-projection (thresholds at the 1% quantile of a
#: calibration batch) changes the held-out logits by less than this (relative L2 norm; measured
#: 0.0013) ...
LOGIT_TOLERANCE = 0.01
#: ... and the held-out perplexity by less than this (relative; measured 0.0003).
PERPLEXITY_TOLERANCE = 0.005


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tensors here are tiny: on a shared machine a second torch thread only costs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pretrained(one_thread, tmp_path_factory):
    cache = tmp_path_factory.mktemp("lm_cache")
    lm, info = load_or_pretrain(SMALL, cache_dir=cache, progress=False)
    return lm, info, cache


def fresh(pretrained):
    """A copy of the pretrained model (from the cache), free to change."""
    _, _, cache = pretrained
    lm, info = load_or_pretrain(SMALL, cache_dir=cache, progress=False)
    assert info["cached"]
    return lm


def windows(name, split, n, seed=0):
    return next(random_windows(corpus_ids(name, split), SMALL.context, n, 1, seed=seed))


# The model and its cache first, the Frontprop layers after: once numba's parallel kernels have
# run, their idle OpenMP threads spin and slow the torch calls that follow on a busy machine
# (unless OMP_WAIT_POLICY=PASSIVE), which would make the sampling test slow.


def test_corpora_are_code_and_prose_with_disjoint_splits():
    code, prose = corpus_text("code", "train"), corpus_text("prose", "train")
    assert "def " in code and "import " in code
    assert prose.count(" the ") > 1000 and prose.count("def ") < prose.count(" the ") / 10
    for name in CORPORA:
        train, test = corpus_text(name, "train"), corpus_text(name, "test")
        assert 0.05 < len(test) / (len(train) + len(test)) < 0.15
        assert test[:2000] not in train
    with pytest.raises(ValueError, match="corpus must be one of"):
        corpus_text("poetry")
    with pytest.raises(ValueError, match="split must be one of"):
        corpus_text("code", "valid")


def test_checkpoint_cache_is_reused(pretrained, tmp_path, monkeypatch):
    lm, info, cache = pretrained
    assert not info["cached"] and len(info["losses"]) == SMALL.steps
    assert info["losses"][-1] < info["losses"][0] - 1, "pretraining learned something"

    def no_training(*args, **kwargs):
        raise AssertionError("pretrain called although the checkpoint is cached")

    monkeypatch.setattr(lm_model, "pretrain", no_training)
    again, info2 = load_or_pretrain(SMALL, cache_dir=cache, progress=False)
    assert info2["cached"] and info2["path"] == info["path"] and info2["losses"] == info["losses"]
    for (k, v), (k2, v2) in zip(lm.model.state_dict().items(), again.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    other = TinyConfig(**{**SMALL.__dict__, "steps": SMALL.steps + 1})
    assert lm_model.cache_path(other, cache) != lm_model.cache_path(SMALL, cache), "keyed by config"


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other_config"])
def test_corrupt_cache_file_gives_a_clear_error(pretrained, tmp_path, damage):
    _, info, _ = pretrained
    path = lm_model.cache_path(SMALL, tmp_path)
    data = open(info["path"], "rb").read()
    if damage == "garbage":
        path.write_bytes(b"not a checkpoint at all")
    elif damage == "truncated":
        path.write_bytes(data[:len(data) // 2])
    else:
        saved = torch.load(info["path"], weights_only=True)
        torch.save({**saved, "config": {**saved["config"], "d_model": 64}}, path)
    with pytest.raises(CheckpointCorruptError, match="delete it to pretrain again") as error:
        load_or_pretrain(SMALL, cache_dir=tmp_path, progress=False)
    assert str(path) in str(error.value)


def test_layer_names_by_role_and_block(pretrained):
    lm, _, _ = pretrained
    assert lm.layer_names(["mlp_in", "mlp_out"], blocks=[-1]) == ["blocks.1.mlp.fc", "blocks.1.mlp.proj"]
    assert lm.layer_names("attn_in") == ["blocks.0.attn.qkv", "blocks.1.attn.qkv"]
    for name in lm.layer_names(["attn_in", "attn_out", "mlp_in", "mlp_out"]):
        assert isinstance(lm.model.get_submodule(name), nn.Linear)
    with pytest.raises(ValueError, match="roles must be"):
        lm.layer_names(["ffn"])
    with pytest.raises(ValueError, match="blocks must be"):
        lm.layer_names(["mlp_in"], blocks=[2])


def test_generate_is_seeded(pretrained):
    lm, _, _ = pretrained
    a = generate(lm, "def ", 20, seed=0)
    assert a == generate(lm, "def ", 20, seed=0) and isinstance(a, str)
    assert a != generate(lm, "def ", 20, seed=1)


def test_hugging_face_path_says_what_it_needs(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if it were not installed
    with pytest.raises(ValueError, match="pip install transformers"):
        load_hf("distilgpt2")


def test_calibration_inputs_are_the_layers_inputs(pretrained):
    lm, _, _ = pretrained
    ids = windows("code", "train", 4)[:, :-1]
    name = lm.layer_names(["mlp_out"], blocks=[0])[0]
    inputs = calibration_inputs(lm.model, [name], ids)
    assert inputs[name].shape == (4 * SMALL.context, 4 * SMALL.d_model)
    assert (inputs[name] < -0.2).sum() == 0, "after a GELU"


def test_dropin_computes_the_linear_on_its_calibration_batch():
    torch.manual_seed(0)
    linear = nn.Linear(12, 7, bias=True)
    x = torch.randn(50, 12)
    layer = FpDropIn.from_linear(linear, x, quantile=0.0, w_boost=0.01, t_decay=0.001).eval()
    assert isinstance(layer.fp, FpLinear) and not layer.fp.normalize_output
    torch.testing.assert_close(layer.fp.weight.norm(dim=1), torch.ones(7))
    torch.testing.assert_close(layer.scale, linear.weight.norm(dim=1).detach())
    with torch.no_grad():
        torch.testing.assert_close(layer(x), linear(x), atol=1e-5, rtol=1e-5)
        # a higher quantile: the neurons' lowest cosines no longer fire, their outputs are 0
        half = FpDropIn.from_linear(linear, x, quantile=0.5).eval()
        out = half(x) - linear.bias
        fired = out != 0
        assert 0.4 < fired.float().mean() < 0.6
        torch.testing.assert_close(out[fired], (linear(x) - linear.bias)[fired])


def test_dropin_bias_kept_or_refused_and_bad_arguments():
    linear = nn.Linear(4, 3)
    x = torch.randn(10, 4)
    with pytest.raises(ValueError, match="has a bias"):
        FpDropIn.from_linear(linear, x, bias="error")
    with pytest.raises(ValueError, match="bias must be one of"):
        FpDropIn.from_linear(linear, x, bias="drop")
    with pytest.raises(ValueError, match="quantile must lie in"):
        FpDropIn.from_linear(linear, x, quantile=1.0)
    with pytest.raises(ValueError, match="expected an nn.Linear"):
        FpDropIn.from_linear(nn.Conv1d(4, 3, 1), x)
    with pytest.raises(ValueError, match="normalize_output"):
        FpDropIn(linear.weight, normalize_output=True)
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 3))
    with pytest.raises(ValueError, match=r"1: has a bias"):
        convert(model, ["0", "1"], x, bias="error")
    assert isinstance(model[0], nn.Linear) and isinstance(model[1], nn.Linear), "nothing changed"


def test_dropin_passes_the_fired_linear_maps_gradient_to_its_input():
    torch.manual_seed(1)
    linear = nn.Linear(6, 5, bias=False)
    x = torch.randn(20, 6)
    layer = FpDropIn.from_linear(linear, x, quantile=0.3).eval()
    xg = x.clone().requires_grad_(True)
    out = layer(xg)
    out.sum().backward()
    fired = (out != 0).float()  # (20, 5)
    torch.testing.assert_close(xg.grad, fired @ linear.weight.detach(), atol=1e-5, rtol=1e-5)
    assert layer.fp.weight.grad is None and not layer.fp.weight.requires_grad


def test_swap_before_learning_changes_a_trained_model_little(pretrained):
    lm = fresh(pretrained)
    heldout = windows("code", "test", 32)
    names = lm.layer_names(["mlp_in"])
    with torch.no_grad():
        before = lm.model(heldout[:, :-1])
    ppl_before = perplexity(lm.model, corpus_ids("code", "test"), SMALL.context, max_tokens=4096)
    converted = convert(lm.model, names, windows("code", "train", 32, seed=1)[:, :-1], quantile=0.01)
    assert set(converted) == set(names) and all(isinstance(lm.model.get_submodule(n), FpDropIn) for n in names)
    lm.model.eval()
    with torch.no_grad():
        after = lm.model(heldout[:, :-1])
    change = float((after - before).norm() / before.norm())
    ppl_after = perplexity(lm.model, corpus_ids("code", "test"), SMALL.context, max_tokens=4096)
    assert 0 < change < LOGIT_TOLERANCE
    assert abs(ppl_after / ppl_before - 1) < PERPLEXITY_TOLERANCE
    assert all(int(m.fp.samples_seen) == 0 for m in converted.values()), "eval mode: nothing learned"
    # the tolerance tells a good calibration from a bad one: thresholds at the median cut half
    # of every neuron's outputs
    lm.model = fresh(pretrained).model
    convert(lm.model, names, windows("code", "train", 32, seed=1)[:, :-1], quantile=0.5)
    with torch.no_grad():
        halved = lm.model.eval()(heldout[:, :-1])
    assert float((halved - before).norm() / before.norm()) > LOGIT_TOLERANCE


def test_converted_model_trains_its_backprop_parts_and_keeps_its_frozen_parts(pretrained):
    lm = fresh(pretrained)
    fp_names = lm.layer_names(["mlp_in"], blocks=[1])
    bp_names = lm.layer_names(["attn_in", "mlp_out"], blocks=[0])
    convert(lm.model, fp_names, windows("code", "train", 16, seed=2)[:, :-1])
    params = trainable_only(lm.model, bp_names)
    assert len(params) == 2
    frozen = {n: p.detach().clone() for n, p in lm.model.named_parameters() if not p.requires_grad}
    trained = {n: p.detach().clone() for n, p in lm.model.named_parameters() if p.requires_grad}
    fp = lm.model.get_submodule(fp_names[0]).fp
    fp_before = fp.weight.clone()
    optimizer = torch.optim.Adam(params, lr=1e-3)
    lm.model.train()  # the Fp layer learns in the same forward passes
    for seed in range(3):
        batch = windows("prose", "train", 8, seed=seed)
        logits = lm.model(batch[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    now = dict(lm.model.named_parameters())
    assert all(torch.equal(now[n], p) for n, p in frozen.items()), "frozen parts unchanged"
    assert all(not torch.equal(now[n], p) for n, p in trained.items()), "backprop parts trained"
    assert not torch.equal(fp.weight, fp_before) and int(fp.samples_seen) == 3 * 8 * SMALL.context
    assert fp.weight.grad is None


@pytest.mark.parametrize("arm", ARMS)
def test_adapt_arms_at_matched_tokens(pretrained, arm):
    lm = fresh(pretrained)
    names = lm.layer_names(["mlp_in"], blocks=[-1])
    if arm == "frontprop":
        convert(lm.model, names, windows("code", "train", 16, seed=3)[:, :-1], w_boost=0.01, t_decay=0.01)
    state = {k: v.clone() for k, v in lm.model.state_dict().items()}
    result = adapt(lm.model, arm, names, random_windows(corpus_ids("prose"), SMALL.context, 4, 3, seed=0),
                   progress=False)
    assert result["tokens"] == 3 * 4 * SMALL.context
    changed = {k for k, v in lm.model.state_dict().items() if not torch.equal(v, state[k])}
    if arm == "frozen":
        assert not changed
    elif arm == "backprop":
        assert changed == {f"{names[0]}.weight"}
        assert len(result["losses"]) == 3 and result["learning_state_mb"] > 0 and result["saved_mb"] > 0
    else:
        assert f"{names[0]}.fp.weight" in changed and all(k.startswith(names[0]) for k in changed)
        assert 0 < result["learned_share"] <= 1 and 0 < result["fired_share"] <= 1
        assert result["saved_mb"] == 0 and result["losses"] == []
    assert not lm.model.training
    with pytest.raises(ValueError, match="arm must be one of"):
        adapt(lm.model, "distill", names, [])


def test_frontprop_arm_needs_dropins(pretrained):
    lm = fresh(pretrained)
    with pytest.raises(ValueError, match="needs FpDropIn"):
        adapt(lm.model, "frontprop", lm.layer_names(["mlp_in"]), [], progress=False)
