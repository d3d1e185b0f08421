"""What the layers guarantee under faults: an interrupted learning forward leaves exactly the state
after its first k samples (Ctrl-C is held to the end of a chunk; an error inside a chunk undoes
it), a forward that learns nothing leaves the layer as it was, loads are checked before anything
is copied, extreme magnitudes keep their direction, and bad hyper-parameters are refused alike."""
import math
import signal

import numba
import pytest
import torch
from sklearn.datasets import load_digits

from fpwb import FpConv2d, FpLinear
from fpwb.layers import engine, kernels
from state import assert_same_state, state


@pytest.fixture(autouse=True)
def sigint_raises_keyboard_interrupt():
    """Python's own SIGINT handler for every test here: a process started in the background by a
    shell inherits SIGINT ignored, and then no real Ctrl-C would reach the layer either."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def digits(n=300):
    return torch.tensor(load_digits().images[:n], dtype=torch.float32).unsqueeze(1) / 16


LAYERS = {
    "linear": (lambda **kw: FpLinear(64, 20, t_decay=0.01, seed=0, chunk_size=32, **kw), lambda: digits().flatten(1)),
    "conv": (lambda **kw: FpConv2d(1, 6, 3, t_decay=0.02, seed=0, chunk_size=360, **kw), lambda: digits(120)),
}
#: Where an interrupt is injected: the solver of the chunk (before it runs, or after it wrote the
#: state), the fire count of a chunk, and the silent lookahead.
POINTS = {
    "before a chunk": ("solve", "before"),
    "after a chunk's solver wrote the state": ("solve", "after"),
    "in the fire count": ("count", "before"),
    "in the silent lookahead": ("silent", "before"),
}


def inject(monkeypatch, mode, point, call, fault="signal"):
    """At the given point, on its ``call``-th visit: deliver a real SIGINT (what Ctrl-C in a
    notebook sends), or with ``fault="error"`` raise a RuntimeError there."""
    where, when = POINTS[point]
    module, name = {"solve": (engine, "batch_chunk" if mode == "batch" else "sequential_chunk"),
                    "count": (kernels, "count_fired"), "silent": (engine, "silent_steps")}[where]
    real = getattr(module, name)
    visits = []

    def strike():
        if fault == "signal":
            signal.raise_signal(signal.SIGINT)
        else:
            raise RuntimeError("injected")

    def faulty(*args, **kwargs):
        visits.append(1)
        if when == "before" and len(visits) == call:
            strike()
        result = real(*args, **kwargs)
        if when == "after" and len(visits) == call:
            strike()
        return result

    monkeypatch.setattr(module, name, faulty)
    return lambda: monkeypatch.setattr(module, name, real)


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("mode", ["sequential", "batch"])
@pytest.mark.parametrize("kind", LAYERS)
def test_an_interrupt_anywhere_leaves_the_state_after_the_first_k_samples(kind, mode, point, monkeypatch):
    if (kind, point) == ("conv", "in the fire count"):
        pytest.skip("a conv chunk counts its firings inside its one compiled call ('before a chunk')")
    make, data = LAYERS[kind]
    X = data()
    layer = make(mode=mode)
    silent = POINTS[point][0] == "silent"
    if not silent:  # a layer that has fired; the silent lookahead runs only before the first firing
        layer(X[:40])
    X = X if silent else X[40:]
    start = {k: v.clone() for k, v in layer.state_dict().items()}
    restore = inject(monkeypatch, mode, point, 1 if silent else 3)
    with pytest.raises(KeyboardInterrupt):
        layer(X)
    restore()
    k = int(layer.samples_seen) - int(start["samples_seen"])
    assert 0 < k < len(X), "some chunks were applied, not all"
    clean = make(mode=mode)
    clean.load_state_dict(start)
    clean(X[:k])
    assert_same_state(state(clean), state(layer))
    assert torch.equal(layer(X[k:]), clean(X[k:])), "the rest of the stream goes on as if nothing happened"


@pytest.mark.parametrize("kernel", ["single_step", "single_step_threaded"])
@pytest.mark.parametrize("when", ["before", "after"])
def test_an_interrupt_in_a_one_sample_call_lands_before_or_after_the_sample(when, kernel, monkeypatch):
    """A one-sample call makes its whole state change in one compiled call, during which Python
    runs no signal handler: a SIGINT lands before it (the layer as it was) or after it (the layer
    holding the state after that sample, samples_seen counting it). On one thread (or under
    OMP_WAIT_POLICY=PASSIVE) the call is ``single_step``, else ``single_step_threaded``."""
    if kernel == "single_step_threaded" and numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one thread only")
    threads = 1 if kernel == "single_step" else 2
    monkeypatch.setattr(kernels, "threads_for_short_calls", lambda: threads)
    X = torch.tensor(load_digits().data[:60], dtype=torch.float32)
    layer = FpLinear(64, 20, w_boost=0.05, t_decay=0.02, seed=0)
    for x in X[:40]:
        layer(x)
    start = state(layer)
    real = getattr(kernels, kernel)

    def interrupted(*args):
        if when == "before":
            signal.raise_signal(signal.SIGINT)
        status = real(*args)
        signal.raise_signal(signal.SIGINT)
        return status
    monkeypatch.setattr(kernels, kernel, interrupted)
    with pytest.raises(KeyboardInterrupt):
        layer(X[40])
    monkeypatch.setattr(kernels, kernel, real)
    clean = FpLinear(64, 20, w_boost=0.05, t_decay=0.02, seed=0)
    clean.load_state_dict(start)
    if when == "after":
        clean(X[40])
    assert_same_state(state(clean), state(layer))
    assert int(layer.samples_seen) - int(start["samples_seen"]) == (when == "after")
    for x in X[41:]:  # the stream goes on as if nothing had happened
        assert torch.equal(layer(x), clean(x))
    assert_same_state(state(clean), state(layer))


@pytest.mark.parametrize("point", ["before a chunk", "in the silent lookahead"])
@pytest.mark.parametrize("mode", ["sequential", "batch"])
@pytest.mark.parametrize("kind", LAYERS)
def test_an_error_inside_a_chunk_undoes_that_chunk(kind, mode, point, monkeypatch):
    """An error (out of memory, say) raised where a chunk allocates, before its solver writes:
    the chunk is undone and the layer holds the state after the chunks before it. (Between the
    solver and the end of the chunk only a signal can strike, and signals are held.)"""
    make, data = LAYERS[kind]
    X = data()
    layer = make(mode=mode)
    silent = POINTS[point][0] == "silent"
    if not silent:
        layer(X[:40])
    X = X if silent else X[40:]
    start = {k: v.clone() for k, v in layer.state_dict().items()}
    restore = inject(monkeypatch, mode, point, 1 if silent else 3, fault="error")
    with pytest.raises(RuntimeError, match="injected"):
        layer(X)
    restore()
    k = int(layer.samples_seen) - int(start["samples_seen"])
    clean = make(mode=mode)
    clean.load_state_dict(start)
    if k:
        clean(X[:k])
    assert_same_state(state(clean), state(layer))


def test_the_interrupt_points_are_reached():
    """Each injected point is on the path of the runs above (else the test proves nothing)."""
    targets = ((engine, "sequential_chunk"), (engine, "batch_chunk"), (kernels, "count_fired"),
               (engine, "silent_steps"))
    for kind, (make, data) in LAYERS.items():
        for mode in ("sequential", "batch"):
            counts = dict.fromkeys((name for _, name in targets), 0)
            with pytest.MonkeyPatch.context() as patch:
                for module, name in targets:
                    def counted(*args, _real=getattr(module, name), _name=name, **kwargs):
                        counts[_name] += 1
                        return _real(*args, **kwargs)
                    patch.setattr(module, name, counted)
                make(mode=mode)(data())
            solver = "batch_chunk" if mode == "batch" else "sequential_chunk"
            counted_apart = kind != "conv"  # (a conv chunk counts inside its kernel)
            assert counts[solver] >= 3 and counts["count_fired"] >= 3 * counted_apart and counts["silent_steps"] >= 1, \
                (kind, mode, counts)


def test_an_error_before_anything_was_learned_removes_a_conv_layers_first_thresholds(monkeypatch):
    layer = FpConv2d(1, 4, 3, seed=0, t_decay=0.05, chunk_size=64)
    restore = inject(monkeypatch, "sequential", "in the silent lookahead", 1, fault="error")
    with pytest.raises(RuntimeError, match="injected"):
        layer(digits(20))
    restore()
    assert layer.threshold is None, "the thresholds this call created are gone again"
    assert layer(torch.rand(2, 1, 10, 10)).shape == (2, 4, 8, 8), "any input size is still open"


@pytest.mark.parametrize("make", [lambda: torch.zeros(0, 1, 8, 8), lambda: torch.zeros(3, 1, 8, 8)],
                         ids=["empty batch", "all-zero images"])
def test_a_conv_forward_that_learns_nothing_leaves_the_layer_as_it_was(make):
    layer = FpConv2d(1, 4, 3, seed=0)
    before = state(layer)
    out = layer(make())
    assert out.shape[1:] == (4, 6, 6) and not out.any()
    assert layer.threshold is None
    assert_same_state(before, state(layer))
    assert layer(torch.rand(1, 1, 12, 12)).shape == (1, 4, 10, 10)


def test_a_frozen_conv_forward_creates_no_thresholds():
    layer = FpConv2d(1, 4, 3, seed=0).freeze()
    layer(digits(3))
    assert layer.threshold is None


def test_a_first_forward_in_inference_mode_keeps_normal_state():
    layer = FpConv2d(1, 4, 3, seed=0)
    with torch.inference_mode():
        layer(digits(5))
    assert not layer.threshold.is_inference()
    layer(digits(5))  # a normal forward afterwards works and learns
    assert int(layer.samples_seen) == 10


@pytest.mark.parametrize("kind", LAYERS)
def test_conv_takes_one_unbatched_image_like_nn_conv2d(kind):
    layer = FpConv2d(1, 4, 3, seed=0)
    image = digits(1)[0]  # (1, 8, 8)
    twin = FpConv2d(1, 4, 3, seed=0)
    assert torch.equal(layer(image), twin(image.unsqueeze(0))[0])
    assert layer(image).shape == torch.nn.Conv2d(1, 4, 3)(image).shape


@pytest.mark.parametrize("exponent", [-37, -30, -23, -10, 0, 10, 20, 30, 38])
def test_extreme_float32_magnitudes_keep_their_direction(exponent):
    """From the smallest normal float32 to the largest finite one, a scaled sample is the same
    sample: same output, same learning (float64 is the check)."""
    X = digits(40).flatten(1)
    scale = torch.finfo(torch.float32).max / 2 if exponent == 38 else 10.0 ** exponent
    if exponent == -37:
        scale = torch.finfo(torch.float32).tiny / float(X[X > 0].min())  # smallest entry becomes the smallest normal
    plain, scaled = (FpLinear(64, 10, t_decay=0.05, seed=0) for _ in range(2))
    out_plain, out_scaled = plain(X), scaled(X * scale)
    assert torch.isfinite(X * scale).all()
    assert (out_plain - out_scaled).abs().max() < 1e-5
    assert (plain.weight - scaled.weight).abs().max() < 1e-5
    assert torch.equal(plain.fire_count, scaled.fire_count)
    conv, conv_scaled = (FpConv2d(1, 4, 3, t_decay=0.05, seed=0) for _ in range(2))
    assert (conv(digits(10)) - conv_scaled(digits(10) * scale)).abs().max() < 1e-5


def test_ordinary_inputs_compute_the_same_bits_as_before_the_scaling_guard():
    X = digits(200).flatten(1)
    layer = FpLinear(64, 10, t_decay=0.05, seed=0)
    norm = X.norm(dim=1, keepdim=True)
    assert torch.equal(torch.nn.functional.normalize(X, dim=1, eps=0), X / norm)
    layer(X)
    assert layer.weight.dtype == torch.float32


def test_a_float64_input_that_overflows_float32_says_so():
    layer = FpLinear(4, 2, seed=0)
    with pytest.raises(ValueError, match="overflow"):
        layer(torch.tensor([[1e300, 0, 0, 0]], dtype=torch.float64))


def test_oja_with_a_large_w_boost_is_refused_and_never_holds_nan():
    with pytest.raises(ValueError, match="w_boost below 1"):
        FpLinear(64, 10, rule="oja", w_boost=3.0)
    layer = FpLinear(64, 10, rule="oja", w_boost=0.99, t_decay=0.05, seed=0)
    layer(digits(300).flatten(1))
    assert torch.isfinite(layer.weight).all() and torch.isfinite(layer.threshold).all()


def test_a_diverging_batch_run_is_refused_with_the_layer_untouched():
    layer = FpConv2d(1, 4, 3, rule="oja", w_boost=0.5, mode="batch", t_decay=0.5, seed=0, chunk_size=100_000)
    layer(torch.zeros(1, 1, 8, 8) + torch.eye(8))  # thresholds made, nothing diverged yet
    start = {k: v.clone() for k, v in layer.state_dict().items()}
    X = digits(100)
    with pytest.raises(ValueError, match="diverged"):
        layer(X)
    assert torch.isfinite(layer.weight).all()
    k = int(layer.samples_seen) - int(start["samples_seen"])
    clean = FpConv2d(1, 4, 3, rule="oja", w_boost=0.5, mode="batch", t_decay=0.5, seed=0, chunk_size=100_000)
    clean.load_state_dict(start)
    if k:
        clean(X[:k])
    assert_same_state(state(clean), state(layer)), "the chunks before the diverging one, and nothing of it"


def trained(kind):
    make, data = LAYERS[kind]
    layer = make()
    layer(data()[:100])
    return layer


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("edit, message", [
    (lambda s: s["weight"].view(-1)[0].fill_(math.nan), "NaN or Inf"),
    (lambda s: s["weight"].mul_(2), "unit length"),
    (lambda s: s["threshold"].view(-1)[0].fill_(-0.5), ">= 0"),
    (lambda s: s["threshold"].view(-1)[0].fill_(math.inf), "NaN or Inf"),
    (lambda s: s["fire_count"].view(-1)[0].fill_(-1), "counts"),
    (lambda s: s["samples_seen"].fill_(-3), "counts"),
])
def test_loading_impossible_values_is_refused_with_the_layer_untouched(kind, edit, message):
    layer = trained(kind)
    bad = {k: v.clone() for k, v in trained(kind).state_dict().items()}
    edit(bad)
    before = state(layer)
    with pytest.raises(ValueError, match=message):
        layer.load_state_dict(bad)
    assert_same_state(before, state(layer))


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("edit", [lambda s: s.pop("fire_count"), lambda s: s.update(extra=torch.zeros(1)),
                                  lambda s: s.update(weight=s["weight"][:3])],
                         ids=["missing key", "extra key", "wrong shape"])
def test_a_strict_load_that_fails_copies_nothing(kind, edit):
    layer = trained(kind)
    source = {k: v.clone() + (1 if k == "learn_count" else 0) for k, v in trained(kind).state_dict().items()}
    edit(source)
    before = state(layer)
    with pytest.raises(RuntimeError):
        layer.load_state_dict(source)
    assert_same_state(before, state(layer))


def test_a_checkpoint_taken_at_initialisation_restores_a_conv_layer_that_ran():
    fresh = FpConv2d(1, 4, 3, seed=0)
    checkpoint = fresh.state_dict()
    layer = FpConv2d(1, 4, 3, seed=0)
    layer(digits(20))
    layer.load_state_dict(checkpoint)
    assert layer.threshold is None
    assert_same_state(state(fresh), state(layer))
    assert layer(torch.rand(1, 1, 12, 12)).shape == (1, 4, 10, 10)


def test_fire_count_counts_non_zero_outputs():
    layer = FpLinear(64, 10, rule="homeostatic", t_decay=0.01, seed=0, normalize_output=False)
    out = layer(digits(300).flatten(1))
    assert torch.equal(layer.fire_count, (out != 0).sum(0))


@pytest.mark.parametrize("kwargs, message", [
    (dict(w_boost=True), "w_boost"), (dict(w_boost="0.1"), "w_boost"), (dict(t_decay="0.1"), "t_decay"),
    (dict(repulsion="0.1"), "repulsion"), (dict(repulsion_cosine=True), "repulsion_cosine"),
    (dict(normalize_output=1), "normalize_output"), (dict(seed=2 ** 70), "seed"),
])
def test_hyper_parameters_are_checked_alike(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FpLinear(4, 2, **kwargs)
    with pytest.raises(ValueError, match=message):
        FpConv2d(1, 2, 3, **kwargs)


def test_a_three_number_kernel_size_is_refused_clearly():
    with pytest.raises(ValueError, match="kernel_size must be an int >= 1 or a pair"):
        FpConv2d(1, 3, (3, 3, 3))


def test_a_layer_on_the_meta_device_says_so():
    layer = FpLinear(4, 2, seed=0).to("meta")
    with pytest.raises(ValueError, match="meta device"):
        layer(torch.zeros(1, 4, device="meta"))
