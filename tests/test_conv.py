"""FpConv2d: exactness against the location-by-location reference, shapes, state, bad input."""
import functools
import math

import numba
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from fpwb import FpConv2d
from fpwb.layers import engine, kernels
from fpwb.layers.conv import CONV_MIN_CHANNELS
from reference import reference_conv, reference_conv_batch
from state import assert_same_state, state

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def digit_images(n=300, channels=1):
    images = torch.tensor(load_digits().images[:n], dtype=torch.float64).unsqueeze(1) / 16
    return images.repeat(1, channels, 1, 1) if channels > 1 else images  # (n, C, 8, 8)


@functools.lru_cache
def reference_run(kernel_size, stride, padding, channels):
    """Inputs (one all-zero sample among them) and the reference run from seed 0's start state."""
    X = digit_images(200, channels)
    X[5] = 0  # an all-zero sample changes nothing, not even the decay
    layer = FpConv2d(channels, 6, kernel_size, stride, padding, seed=0, dtype=torch.float64)
    Ho, Wo = layer.output_size(8, 8)
    return X, reference_conv(layer.weight, torch.ones(6, Ho, Wo, dtype=torch.float64), X, 0.02,
                             0.01, stride=layer.stride, padding=layer.padding)


@pytest.mark.parametrize("solver", [None, "direct", "gram", "rounds"])
@pytest.mark.parametrize("kernel_size, stride, padding, channels", [
    ((3, 2), (1, 2), (1, 0), 1),
    (3, 1, 1, 2),
    # From CONV_MIN_CHANNELS on, the walk (solvers None and 'direct') reads patches from the images.
    ((3, 2), (1, 2), (1, 0), CONV_MIN_CHANNELS),
])
def test_sequential_matches_reference(kernel_size, stride, padding, channels, solver):
    X, (ref_out, ref_W, ref_t) = reference_run(kernel_size, stride, padding, channels)
    layer = FpConv2d(channels, 6, kernel_size, stride, padding, t_decay=0.01, seed=0,
                     dtype=torch.float64, normalize_output=False, chunk_size=300)
    layer.solver = solver
    out = layer(X)
    assert (ref_out > 0).sum() > 1000, "the schedule should fire often"
    assert (out - ref_out).abs().max() < 1e-5
    assert (layer.weight - ref_W).abs().max() < 1e-5
    assert (layer.threshold - ref_t).abs().max() < 1e-5


@pytest.mark.parametrize("kernel_size, stride, padding", [(5, 1, 2), ((3, 5), (2, 1), (0, 2)), (2, 3, 0)])
def test_output_shape_matches_nn_conv2d(kernel_size, stride, padding):
    X = torch.rand(3, 2, 11, 9)
    fp = FpConv2d(2, 4, kernel_size, stride, padding)
    ref = nn.Conv2d(2, 4, kernel_size, stride, padding, bias=False)
    assert fp(X).shape == ref(X).shape
    assert fp.weight.shape == ref.weight.shape
    assert fp.threshold.shape == (4, *ref(X).shape[2:])


@pytest.mark.parametrize("solver, channels, sparse_move", [
    (None, 2, None), ("compiled", 2, None), ("tensor", 2, None),
    # From CONV_MIN_CHANNELS on, patches are never written out: projections by F.conv2d, the move
    # by the compiled loop over learned patches (SPARSE_MOVE 1: always) or a weight-gradient
    # convolution (SPARSE_MOVE 0: from the second chunk on).
    (None, 8, 1.0), (None, 8, 0.0), ("tensor", 8, None)])
def test_batch_mode_matches_its_reference(solver, channels, sparse_move, monkeypatch):
    if sparse_move is not None:
        monkeypatch.setattr(engine, "SPARSE_MOVE", sparse_move)
    X = digit_images(60, channels=channels) * torch.linspace(0.5, 1.5, channels).view(1, -1, 1, 1)
    X[7] = 0  # skipped: not a step of its chunk
    layer = FpConv2d(channels, 6, (3, 2), (1, 2), (1, 0), mode="batch", t_decay=0.05, seed=0,
                     dtype=torch.float64, normalize_output=False, chunk_size=320)  # 10 samples
    layer.solver = solver
    Ho, Wo = layer.output_size(8, 8)
    t0 = torch.ones(6, Ho, Wo, dtype=torch.float64)
    ref_out, ref_W, ref_t = reference_conv_batch(layer.weight, t0, X, 0.02, 0.05, chunk=10,
                                                 stride=layer.stride, padding=layer.padding)
    out = layer(X)
    assert (ref_out > 0).sum() > 1000, "the schedule should fire often"
    assert (out - ref_out).abs().max() < 1e-9
    assert (layer.weight - ref_W).abs().max() < 1e-9
    assert (layer.threshold - ref_t).abs().max() < 1e-9


@pytest.mark.parametrize("kernel_size, stride, padding", [(3, 1, 1), ((3, 2), (2, 1), (0, 1))])
def test_patches_project_and_write_out_as_unfold_does(kernel_size, stride, padding):
    X = torch.rand(4, CONV_MIN_CHANNELS, 9, 7, dtype=torch.float64)
    X[1] = 0
    layer = FpConv2d(CONV_MIN_CHANNELS, 5, kernel_size, stride, padding, seed=0, dtype=torch.float64)
    patches = layer.patches(X)
    cols = torch.nn.functional.unfold(X, kernel_size, padding=padding, stride=stride).transpose(1, 2)
    unit = cols / cols.norm(dim=2, keepdim=True).clamp_min(1e-300)
    assert torch.allclose(patches.rows(), unit, atol=1e-12)
    weight = layer.weight.view(5, -1)
    assert torch.allclose(patches.project(weight), unit @ weight.T, atol=1e-12)
    assert torch.equal(patches.norm > 0, cols.norm(dim=2) > 0)
    layer.threshold = torch.zeros(5, *layer.output_size(9, 7), dtype=torch.float64)
    frozen = layer.eval()(X)  # inference projects by convolution: the same map
    values = unit @ weight.T  # (B, L, N)
    fired = values * ((values >= 0) & (cols.norm(dim=2, keepdim=True) > 0))
    expected = fired / fired.flatten(1).norm(dim=1).clamp_min(1e-300).view(-1, 1, 1)
    assert (frozen > 0).sum() > 50
    assert torch.allclose(frozen.flatten(2).transpose(1, 2), expected, atol=1e-12)


@pytest.mark.parametrize("mode", ["sequential", "batch"])
def test_few_channel_patches_are_written_out_one_chunk_at_a_time(mode, monkeypatch):
    """Below CONV_MIN_CHANNELS the solvers walk written-out patch rows: each chunk's rows, written
    when the chunk is solved, never the whole input's at once (60,000 images of 28x28 would hold
    60,000 x 784 x 25 values). The results are checked against the reference in the tests above."""
    from fpwb.layers.patches import Patches
    X = digit_images(120)
    layer = FpConv2d(1, 6, 3, padding=1, mode=mode, t_decay=0.01, seed=0, chunk_size=64 * 10)
    layer(X[:60])  # past the silent start, where one look-ahead may span many chunks
    assert int(layer.fire_count.sum()) > 0
    written, rows = [], Patches.rows
    monkeypatch.setattr(Patches, "rows", lambda self: written.append(len(self)) or rows(self))
    layer(X[60:])
    assert max(written) <= 10 and sum(written) == 60, written


def test_batch_mode_learns_and_keeps_shapes():
    X = digit_images(200)
    layer = FpConv2d(1, 6, 3, padding=1, mode="batch", t_decay=0.01, seed=0)
    before = layer.weight.clone()
    out = layer(X)
    assert out.shape == (200, 6, 8, 8)
    assert not torch.equal(before, layer.weight)
    assert torch.allclose(layer.weight.flatten(1).norm(dim=1), torch.ones(6))


def test_state_dict_round_trip_includes_thresholds():
    X = digit_images(200)
    layer = FpConv2d(1, 4, 3, padding=1, t_decay=0.01, seed=0)
    layer(X[:100])
    copy = FpConv2d(1, 4, 3, padding=1, t_decay=0.01, seed=5)
    copy.load_state_dict(layer.state_dict())
    assert torch.equal(copy.threshold, layer.threshold)
    assert torch.equal(copy(X[100:]), layer(X[100:]))


def test_frozen_layer_changes_nothing():
    X = digit_images(100)
    layer = FpConv2d(1, 4, 3, t_decay=0.01, seed=0)
    layer(X[:50])
    layer.freeze()
    before = state(layer)
    layer(X[50:])
    after = state(layer)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_no_autograd_and_a_backprop_head_trains():
    X = digit_images(64).float()
    fp = FpConv2d(1, 4, 3, t_decay=0.01, seed=0)
    head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    loss = nn.functional.cross_entropy(head(fp(X)), torch.tensor(load_digits().target[:64]))
    loss.backward()
    assert head[1].weight.grad is not None and list(fp.parameters()) == []


@pytest.mark.parametrize("kwargs, message", [
    (dict(dilation=2), "dilation"), (dict(groups=2), "groups"), (dict(bias=True), "no bias"),
    (dict(w_boost=-1), "w_boost"), (dict(t_decay=math.nan), "t_decay"), (dict(stride=0), "stride"),
])
def test_bad_construction_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FpConv2d(2, 4, 3, **kwargs)


@pytest.mark.parametrize("make, message", [
    (lambda: torch.rand(2, 3, 8, 8), r"\(batch, 2, H, W\)"),
    (lambda: torch.rand(3, 8, 8), r"\(2, H, W\)"),
    (lambda: torch.rand(8, 8), r"\(batch, 2, H, W\)"),
    (lambda: torch.rand(2, 2, 9, 8), "thresholds exist"),
    (lambda: torch.rand(2, 2, 2, 2), "smaller than the kernel"),
    (lambda: torch.full((1, 2, 8, 8), math.nan), "NaN or Inf"),
])
def test_bad_input_is_rejected_with_state_untouched(make, message):
    layer = FpConv2d(2, 4, 3, t_decay=0.01, seed=0)
    layer(torch.rand(5, 2, 8, 8))
    before = state(layer)
    with pytest.raises(ValueError, match=message):
        layer(make())
    after = state(layer)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_reset_thresholds_accepts_a_new_size():
    layer = FpConv2d(1, 2, 3)
    layer(torch.rand(1, 1, 8, 8))
    layer.reset_thresholds()
    assert layer(torch.rand(1, 1, 10, 10)).shape == (1, 2, 8, 8)


def test_repr():
    text = repr(FpConv2d(3, 16, 5, padding=2))
    assert "3, 16, kernel_size=(5, 5)" in text and "padding=(2, 2)" in text and "w_boost=0.02" in text


@CUDA
def test_cuda_matches_cpu_float64():
    X = digit_images(100)
    cpu = FpConv2d(1, 4, 3, padding=1, t_decay=0.01, seed=0, dtype=torch.float64)
    gpu = FpConv2d(1, 4, 3, padding=1, t_decay=0.01, seed=0, dtype=torch.float64, device="cuda")
    assert (cpu(X) - gpu(X.cuda()).cpu()).abs().max() < 1e-9


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="one thread only")
@pytest.mark.parametrize("mode, channels, sparse_move", [
    ("batch", 2, None), ("batch", CONV_MIN_CHANNELS, 1.0), ("batch", CONV_MIN_CHANNELS, 0.0),
    ("sequential", 2, None), ("sequential", CONV_MIN_CHANNELS, None)])
def test_conv_kernels_give_the_same_bits_on_any_thread_count(mode, channels, sparse_move, monkeypatch):
    if sparse_move is not None:
        monkeypatch.setattr(engine, "SPARSE_MOVE", sparse_move)
    X = digit_images(80, channels).float()
    results = []
    for threads in (1, 2):
        monkeypatch.setattr(kernels, "match_threads", lambda: numba.set_num_threads(threads))
        layer = FpConv2d(channels, 7, 3, padding=1, mode=mode, t_decay=0.05, seed=3, chunk_size=640)
        results.append((layer(X), layer.weight.clone(), layer.threshold.clone(), layer.fire_count.clone(),
                        layer.learn_count.clone()))
    assert (results[0][0] > 0).sum() > 1000
    for one, two in zip(*results):
        assert torch.equal(one, two)


@pytest.mark.parametrize("mode", ["sequential", "batch"])
def test_conv_kernels_count_the_non_zero_firings_and_return_the_conv_layout(mode):
    X = digit_images(60, CONV_MIN_CHANNELS)
    layer = FpConv2d(CONV_MIN_CHANNELS, 5, 3, padding=1, mode=mode, t_decay=0.05, seed=0,
                     dtype=torch.float64, normalize_output=False)
    out = layer(X)
    assert out.is_contiguous()  # written in place in the (B, C, H, W) layout, no transposed copy
    assert torch.equal(layer.fire_count, (out != 0).sum((0, 2, 3)))
    assert torch.equal(layer.learn_count, layer.fire_count)  # no k_winners: every firing learns


@pytest.mark.parametrize("run", [0, 1, 3, 4, 5, 9])
def test_grouped_patch_adds_give_the_bits_of_one_add_after_another(run):
    """batch_conv adds a kernel's learned patches four per pass over its weights; the sums must be
    those of adding them one at a time, in order (patches from channels-last images, and rows)."""
    rng = np.random.default_rng(run)
    kh, kw, channels, out_width = 3, 3, 5, 6
    images = rng.standard_normal((2, out_width + kh - 1, (out_width + kw - 1) * channels)).astype(np.float32)
    geometry = np.array([out_width, kh, kw, 1, 1, channels])
    tops, lefts = kernels._patch_starts(out_width * out_width, geometry)
    at = rng.choice(out_width * out_width, size=run, replace=False).astype(np.int32)
    shares = rng.standard_normal(run).astype(np.float32)
    weight = rng.standard_normal((3, kh * kw * channels)).astype(np.float32)
    one_by_one = weight.copy()
    for share, s in zip(shares, at):
        kernels._add_patch(one_by_one, 1, share, images, 1, tops[s], lefts[s], kh, kw * channels)
    grouped = weight.copy()
    kernels._add_patches(grouped, 1, shares, at, images, 1, tops, lefts, kh, kw * channels)
    assert np.array_equal(grouped, one_by_one)
    assert run == 0 or not np.array_equal(grouped, weight)

    rows = rng.standard_normal((2 * out_width * out_width, weight.shape[1])).astype(np.float32)
    one_by_one = weight.copy()
    for share, s in zip(shares, at):
        kernels._add_row(one_by_one, 2, share, rows, out_width * out_width + s)
    grouped = weight.copy()
    kernels._add_rows(grouped, 2, shares, rows, out_width * out_width, at)
    assert np.array_equal(grouped, one_by_one)


@pytest.mark.parametrize("channels", [1, CONV_MIN_CHANNELS])
def test_sequential_walk_with_a_rate_of_one_matches_reference(channels):
    """w_boost=1 jumps to the input (w' = x, c = 0): the walk, which keeps a moved kernel as a scale
    times a stored row, writes it out instead of dividing by c."""
    X = digit_images(100, channels)
    layer = FpConv2d(channels, 6, 3, padding=1, w_boost=1.0, t_decay=0.05, seed=0, dtype=torch.float64,
                     normalize_output=False)
    ref_out, ref_W, ref_t = reference_conv(layer.weight.clone(), torch.ones(6, 8, 8, dtype=torch.float64), X,
                                           1.0, 0.05, padding=(1, 1))
    out = layer(X)
    assert (ref_out > 0).sum() > 100
    assert (out - ref_out).abs().max() < 1e-5
    assert (layer.weight - ref_W).abs().max() < 1e-5


@pytest.mark.parametrize("seed", range(4))
def test_reach_bound_never_skips_a_kernel_that_can_fire(seed):
    """scan_conv skips a moved kernel's dot product where ``_out_of_reach`` says it cannot fire: on
    float32 unit kernels and patches, the worst case among them (the patch in the plane of w_start
    and the drift, on the far side), the bound must hold, and it must still skip where y0 is far
    below the level (else it saves nothing)."""
    rng = np.random.default_rng(seed)
    K = 576
    unit = lambda v: (v / np.linalg.norm(v)).astype(np.float32)
    for angle in (1e-4, 0.01, 0.1, 0.5, 1.5):
        w0 = unit(rng.standard_normal(K))
        across = rng.standard_normal(K)
        across = unit(across - (across @ w0) * w0)
        w = unit(math.cos(angle) * w0 + math.sin(angle) * across)
        align = float(w.astype(np.float64) @ w0.astype(np.float64))
        moves = int(rng.integers(0, 20))
        reach, slack = kernels._reach(align, moves)
        for patch_angle in np.linspace(0, math.pi, 25):
            x = unit(math.cos(patch_angle) * w0 + math.sin(patch_angle) * across + 1e-3 * rng.standard_normal(K))
            y0 = float(np.float32(w0 @ x))
            y = float(w.astype(np.float64) @ x.astype(np.float64))
            for step_scale in (1.0, 3.7):
                level = y * step_scale * (1 - 1e-7) if y > 0 else y * step_scale * (1 + 1e-7)
                assert not kernels._out_of_reach(y0, align, reach, slack, step_scale, level), (angle, patch_angle)
    assert kernels._out_of_reach(0.2, 0.999, *kernels._reach(0.999, 3), 1.0, 0.5)
    assert not kernels._out_of_reach(0.49, 0.999, *kernels._reach(0.999, 3), 1.0, 0.5)
