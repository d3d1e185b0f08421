"""FpLinear: exactness against the per-sample reference, state, contract, bad input."""
import functools
import math

import numba
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from fpwb import FpLinear
from fpwb.layers import engine, kernels
from reference import reference_batch, reference_linear
from state import assert_same_state, state

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def digits(size=8, repeat=2):
    """scikit-learn's digits (real images), optionally resized; repeated to get thousands of samples."""
    images = torch.tensor(load_digits().images, dtype=torch.float64).unsqueeze(1) / 16
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images.flatten(1).repeat(repeat, 1)  # (1797 * repeat, size * size)


@functools.lru_cache
def reference_run(size):
    """The reference over digits at a given size, from the start state of seed 1 (shared)."""
    X = digits(size)
    layer = FpLinear(X.shape[1], 60, seed=1, dtype=torch.float64)
    return X, reference_linear(layer.weight, layer.threshold, X, 0.02, 0.002)


@pytest.mark.parametrize("size, solver", [(8, None), (8, "direct"), (8, "gram"), (8, "rounds"),
                                          (28, None)])
def test_sequential_matches_reference(size, solver):
    X, (ref_out, ref_W, ref_t) = reference_run(size)
    layer = FpLinear(X.shape[1], 60, t_decay=0.002, seed=1, dtype=torch.float64,
                     normalize_output=False, chunk_size=128)
    layer.solver = solver
    out = layer(X)
    fired = (ref_out > 0).sum(1).double()
    assert fired[:300].sum() == 0, "the schedule should start with a phase where nothing fires"
    assert fired[1000:].mean() > 2, "and end where most samples fire several neurons"
    assert (out - ref_out).abs().max() < 1e-5
    assert (layer.weight - ref_W).abs().max() < 1e-5
    assert (layer.threshold - ref_t).abs().max() < 1e-5
    assert torch.equal(layer.fire_count, (ref_out > 0).sum(0))


@pytest.mark.parametrize("solver", ["gram", "direct", "rounds"])
@pytest.mark.parametrize("w_boost", [1.0, 1.5])
def test_large_w_boost_matches_reference(w_boost, solver):
    # w_boost 1: a fired neuron jumps onto the input, so its start weight's share drops to 0
    X = digits(8, repeat=1)[:600]
    layer = FpLinear(64, 20, w_boost=w_boost, t_decay=0.01, seed=1, dtype=torch.float64,
                     normalize_output=False)
    layer.solver = solver
    ref_out, ref_W, _ = reference_linear(layer.weight, layer.threshold, X, w_boost, 0.01)
    out = layer(X)
    assert (ref_out > 0).sum() > 500
    assert (out - ref_out).abs().max() < 1e-9
    assert (layer.weight - ref_W).abs().max() < 1e-9


def test_sequential_is_independent_of_batching():
    X = digits(8, repeat=1)
    whole = FpLinear(64, 30, t_decay=0.003, seed=2, dtype=torch.float64)
    parts = FpLinear(64, 30, t_decay=0.003, seed=2, dtype=torch.float64, chunk_size=7)
    out_whole = whole(X)
    out_parts = torch.cat([parts(x) for x in X.split(100)])
    assert (out_whole - out_parts).abs().max() < 1e-9
    assert (whole.weight - parts.weight).abs().max() < 1e-9


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rule, normalize_output", [("frontprop", True), ("frontprop", False),
                                                    ("per_neuron_rate", True)])
def test_one_sample_calls_take_the_single_position_path_and_match_the_reference(
        rule, normalize_output, dtype, monkeypatch):
    calls = []
    single = engine.single_position

    def counted(*args, **kwargs):
        out = single(*args, **kwargs)
        calls.append(out is not None)  # None: an input for the general path (the zero sample)
        return out
    monkeypatch.setattr(engine, "single_position", counted)
    X = digits(8, repeat=1)[:400].to(dtype)
    X[5] = 0  # a zero sample changes nothing, on either path
    kwargs = dict(w_boost=0.05, t_decay=0.01, seed=3, rule=rule, normalize_output=normalize_output, dtype=dtype)
    fast, reference = FpLinear(64, 30, **kwargs), FpLinear(64, 30, mode="reference", **kwargs)
    outs = [(fast(x), reference(x.unsqueeze(0))[0]) for x in X]
    assert sum(calls) == len(X) - 1
    tolerance = 1e-4 if dtype == torch.float32 else 1e-9
    assert sum(int((b > 0).sum()) for _, b in outs) > 300  # neurons fire and move
    assert max(float((a - b).abs().max()) for a, b in outs) < tolerance
    assert (fast.weight - reference.weight).abs().max() < tolerance
    assert (fast.threshold - reference.threshold).abs().max() < tolerance
    for counter in ("fire_count", "learn_count", "samples_seen"):
        assert torch.equal(getattr(fast, counter), getattr(reference, counter)), counter


@pytest.mark.parametrize("solver", [None, "compiled", "tensor"])
def test_batch_mode_matches_its_reference(solver):
    X = digits(8, repeat=1)
    layer = FpLinear(64, 40, t_decay=0.003, mode="batch", chunk_size=32, seed=3,
                     dtype=torch.float64, normalize_output=False)
    layer.solver = solver
    W0, t0 = layer.weight.clone(), layer.threshold.clone().view(-1, 1)
    out = layer(X)
    ref_out, ref_W, ref_t = reference_batch(W0, t0, X, 0.02, 0.003, chunk=32)
    assert (ref_out > 0).sum() > 1000
    assert (out - ref_out).abs().max() < 1e-9
    assert (layer.weight - ref_W).abs().max() < 1e-9
    assert (layer.threshold - ref_t.view(-1)).abs().max() < 1e-9


def test_batch_chunks_keep_their_places_after_a_long_silent_start():
    X = digits(8, repeat=2)
    layer = FpLinear(64, 20, t_decay=0.0008, mode="batch", chunk_size=100, seed=4,
                     dtype=torch.float64, normalize_output=False)
    W0, t0 = layer.weight.clone(), layer.threshold.clone().view(-1, 1)
    out = layer(X)
    ref_out, ref_W, ref_t = reference_batch(W0, t0, X, 0.02, 0.0008, chunk=100)
    first = int((ref_out > 0).any(1).to(torch.uint8).argmax())
    assert first > 1100 and first % 100, "the first firing should come after a silent lookahead"
    assert (out - ref_out).abs().max() < 1e-9
    assert (layer.weight - ref_W).abs().max() < 1e-9


def test_half_precision_is_refused_clearly():
    with pytest.raises(ValueError, match="float32 or float64"):
        FpLinear(8, 4, dtype=torch.float16)
    layer = FpLinear(8, 4).half()
    with pytest.raises(ValueError, match=r"\.float\(\)"):
        layer(torch.rand(3, 8))


def test_zero_samples_give_zero_and_change_nothing():
    layer = FpLinear(5, 3, t_decay=0.1, seed=0)
    before = state(layer)
    out = layer(torch.zeros(4, 5))
    assert torch.equal(out, torch.zeros(4, 3))
    assert_same_state(before, state(layer))


def test_output_is_unit_length_or_zero():
    X = digits(8, repeat=1)[:500]
    layer = FpLinear(64, 30, t_decay=0.01, seed=0)
    norms = layer(X).norm(dim=1)
    assert ((norms - 1).abs() < 1e-5).sum() > 100
    assert (((norms - 1).abs() < 1e-5) | (norms == 0)).all()


def test_state_dict_round_trip_restores_thresholds():
    X = digits(8, repeat=1)
    layer = FpLinear(64, 20, t_decay=0.003, seed=0)
    layer(X[:1000])
    copy = FpLinear(64, 20, t_decay=0.003, seed=99)
    copy.load_state_dict(layer.state_dict())
    assert_same_state(state(layer), state(copy))
    assert torch.equal(layer(X[1000:]), copy(X[1000:]))
    assert torch.equal(layer.threshold, copy.threshold)


@pytest.mark.parametrize("stop", ["freeze", "eval"])
def test_frozen_layer_changes_nothing(stop):
    X = digits(8, repeat=1)
    layer = FpLinear(64, 20, t_decay=0.003, seed=0)
    layer(X[:800])
    getattr(layer, stop)()
    assert not layer.learning
    before = state(layer)
    out = layer(X[800:])
    assert_same_state(before, state(layer))
    y = (X[800:] / X[800:].norm(dim=1, keepdim=True)).float() @ layer.weight.T
    expected = torch.where(y >= layer.threshold, y, torch.zeros_like(y))
    assert torch.allclose(out, F.normalize(expected, dim=1), atol=1e-6)
    layer.unfreeze().train()
    assert layer.learning


def test_feeds_a_backprop_head():
    X = digits(8, repeat=1)[:400].float()
    labels = torch.tensor(load_digits().target[:400])
    fp = FpLinear(64, 50, t_decay=0.01, seed=0)
    head = nn.Linear(50, 10)
    model = nn.Sequential(fp, head)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.5)
    head_before = head.weight.clone()
    for _ in range(3):
        loss = F.cross_entropy(model(X), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert not torch.equal(head.weight, head_before)
    assert fp.weight.grad is None and not fp.weight.requires_grad
    assert list(fp.parameters()) == []


def test_same_seed_same_bits():
    X = digits(8, repeat=1)
    a, b = (FpLinear(64, 30, t_decay=0.003, seed=7) for _ in range(2))
    assert torch.equal(a(X), b(X))
    assert torch.equal(a.weight, b.weight)
    g = torch.Generator().manual_seed(7)
    assert torch.equal(FpLinear(64, 30, seed=g).weight, FpLinear(64, 30, seed=7).weight)
    assert not torch.equal(FpLinear(64, 30, seed=8).weight, FpLinear(64, 30, seed=7).weight)


def test_uint8_images_are_accepted():
    X = (digits(8, repeat=1)[:300] * 255).round().to(torch.uint8)
    a, b = FpLinear(64, 20, seed=0, t_decay=0.01), FpLinear(64, 20, seed=0, t_decay=0.01)
    assert torch.allclose(a(X), b(X.float() / 255), atol=1e-6)


def test_single_sample_and_dtype():
    layer = FpLinear(4, 3, seed=0, dtype=torch.float64)
    out = layer(torch.ones(4))
    assert out.shape == (3,) and out.dtype == torch.float64
    assert layer.weight.dtype == layer.threshold.dtype == torch.float64


BAD_INPUTS = [
    (lambda: torch.ones(3, 7), "(batch, 6)"),
    (lambda: torch.ones(2, 3, 6), "(batch, 6)"),
    (lambda: torch.ones(0), "(batch, 6)"),
    (lambda: torch.tensor([[1, 2, math.nan, 0, 0, 0.]]), "NaN or Inf"),
    (lambda: torch.tensor([[1, 2, math.inf, 0, 0, 0.]]), "NaN or Inf"),
    (lambda: torch.ones(2, 6, dtype=torch.bool), "real-valued"),
    (lambda: [[1.0] * 6], "torch.Tensor"),
]


@pytest.mark.parametrize("make, message", BAD_INPUTS)
def test_bad_input_is_rejected_with_state_untouched(make, message):
    layer = FpLinear(6, 4, t_decay=0.01, seed=0)
    layer(torch.rand(50, 6))
    before = state(layer)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        layer(make())
    assert_same_state(before, state(layer))


@pytest.mark.parametrize("kwargs, message", [
    (dict(bias=True), "no bias"),
    (dict(w_boost=0), "w_boost"),
    (dict(w_boost=-0.1), "w_boost"),
    (dict(w_boost=math.nan), "w_boost"),
    (dict(t_decay=math.inf), "t_decay"),
    (dict(t_decay=0), "t_decay"),
    (dict(t_decay=1.5), "t_decay"),
    (dict(mode="parallel"), "mode"),
    (dict(chunk_size=0), "chunk_size"),
    (dict(seed="x"), "seed"),
])
def test_bad_construction_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FpLinear(6, 4, **kwargs)
    with pytest.raises(ValueError, match="in_features"):
        FpLinear(0, 4)


def test_bad_hyperparameter_assignment_keeps_old_value():
    layer = FpLinear(6, 4)
    with pytest.raises(ValueError, match="w_boost"):
        layer.w_boost = -1
    assert layer.w_boost == 0.02
    layer.t_decay = 0.01
    assert layer.t_decay == 0.01


def test_repr_names_sizes_hyperparameters_and_mode():
    text = repr(FpLinear(784, 100, mode="batch").freeze())
    for part in ("in_features=784", "out_features=100", "w_boost=0.02", "t_decay=0.0005",
                 "mode='batch'", "frozen"):
        assert part in text


def test_chunk_length_keeps_decay_scale_bounded():
    assert engine.max_steps(0.5, 10_000) < 30
    assert engine.max_steps(0.0005, 256) == 256


@CUDA
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", ["sequential", "batch"])
def test_cuda_matches_cpu(dtype, mode):
    X = digits(8, repeat=1).to(dtype)
    cpu = FpLinear(64, 40, t_decay=0.003, seed=0, mode=mode, dtype=dtype)
    gpu = FpLinear(64, 40, t_decay=0.003, seed=0, mode=mode, dtype=dtype, device="cuda")
    out_cpu, out_gpu = cpu(X), gpu(X.cuda()).cpu()
    tol = 1e-9 if dtype == torch.float64 else 1e-3
    if dtype == torch.float64:
        assert (out_cpu - out_gpu).abs().max() < tol
        assert (cpu.weight - gpu.weight.cpu()).abs().max() < tol
    else:  # float32 rounding can flip a firing at y == t; compare what is robust
        assert (cpu.weight - gpu.weight.cpu()).abs().mean() < 0.05


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="one thread only")
@pytest.mark.parametrize("mode, solver", [("sequential", "gram"), ("sequential", "direct"), ("batch", None)])
def test_compiled_kernels_give_the_same_bits_on_any_thread_count(mode, solver, monkeypatch):
    X = digits(8, repeat=1)[:800].float()
    results = []
    for threads in (1, 2):
        monkeypatch.setattr(kernels, "match_threads", lambda: numba.set_num_threads(threads))
        layer = FpLinear(64, 40, t_decay=0.01, mode=mode, seed=5)
        layer.solver = solver
        results.append((layer(X), layer.weight.clone(), layer.threshold.clone()))
    assert (results[0][0] > 0).sum() > 1000
    for one, two in zip(*results):
        assert torch.equal(one, two)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="one thread only")
def test_one_sample_calls_give_the_same_bits_on_any_thread_count(monkeypatch):
    """kernels.single_step_threaded splits the rows over threads; the state and outputs must be
    those of kernels.single_step (one thread, or OMP_WAIT_POLICY=PASSIVE, as make test sets)."""
    X = digits(8, repeat=1)[:300].float()
    results = []
    for threads in (1, 2):
        monkeypatch.setattr(kernels, "match_threads", lambda: numba.set_num_threads(threads))
        monkeypatch.setattr(kernels, "threads_for_short_calls", lambda: threads)
        layer = FpLinear(64, 41, t_decay=0.01, seed=5)
        outs = torch.stack([layer(x) for x in X])
        results.append((outs, layer.weight.clone(), layer.threshold.clone(), layer.fire_count.clone(),
                        layer.learn_count.clone()))
    assert (results[0][0] > 0).sum() > 500
    for one, two in zip(*results):
        assert torch.equal(one, two)


def test_one_sample_calls_stay_on_one_thread_when_openmp_threads_sleep(monkeypatch):
    """Under OMP_WAIT_POLICY=PASSIVE waking the threads costs more than a one-sample pass saves."""
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    assert kernels.threads_for_short_calls() == 1
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert kernels.threads_for_short_calls() == kernels.threads()
