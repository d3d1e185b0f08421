"""FpStack: joint and greedy schedules, every stage's output, embedding without learning."""
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from fpwb import FpConv2d, FpLinear
from fpwb.layers.stack import FpStack, conv_stack


def images(n=200):
    return torch.tensor(load_digits().images[:n], dtype=torch.float32).unsqueeze(1) / 16  # (n, 1, 8, 8)


def small_stack(**kw):
    return FpStack(FpConv2d(1, 4, 3, padding=1, t_decay=0.02, seed=0, **kw), nn.MaxPool2d(2),
                   FpConv2d(4, 6, 3, padding=1, t_decay=0.02, seed=1, **kw), nn.MaxPool2d(2),
                   nn.Flatten(), FpLinear(6 * 2 * 2, 10, t_decay=0.02, seed=2, **kw))


def snapshot(stack):
    return {k: v.clone() for k, v in stack.state_dict().items()}


def test_outputs_have_every_stage():
    stack = small_stack()
    outs = stack.outputs(images(10))
    assert [tuple(o.shape) for o in outs] == [(10, 4, 8, 8), (10, 4, 4, 4), (10, 6, 4, 4),
                                             (10, 6, 2, 2), (10, 24), (10, 10)]
    assert stack.fp_indices == [0, 2, 5]
    assert stack.names()[1] == "1:MaxPool2d"


def test_joint_fit_equals_layer_by_layer_forward():
    """Joint schedule: each batch goes through every layer in one pass; same as doing it by hand."""
    X = images(200)
    a, b = small_stack(), small_stack()
    a.fit(X, epochs=1, batch_size=50, schedule="joint", seed=3)
    order = torch.randperm(len(X), generator=torch.Generator().manual_seed(3))
    for s in range(0, len(X), 50):
        x = X[order[s:s + 50]]
        for m in b.layers:
            x = m(x)
    for k, v in snapshot(a).items():
        assert torch.equal(v, snapshot(b)[k]), k
    assert all(int(a[i].fire_count.sum()) > 0 for i in a.fp_indices)


def test_greedy_fit_trains_one_layer_at_a_time():
    X = images(200)
    stack = small_stack()
    stack.fit(X, epochs=2, batch_size=64, schedule="greedy", seed=0)
    # each layer saw every sample once per epoch of its own phase (all-zero inputs are skipped)
    assert int(stack[0].samples_seen) == 400 and int(stack[2].samples_seen) == 400
    assert 300 < int(stack[5].samples_seen) <= 400
    # greedy: layer 2 learned on the output of the final (frozen) layer 0, so replaying that
    # gives the same layer 2
    replay = small_stack()
    replay[0].load_state_dict(stack[0].state_dict())
    replay[0].freeze()
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        torch.randperm(len(X), generator=g)  # the first layer's two epochs
    for _ in range(2):
        order = torch.randperm(len(X), generator=g)
        for s in range(0, len(X), 64):
            replay(X[order[s:s + 64]], upto=2)
    assert torch.equal(replay[2].weight, stack[2].weight)
    assert not any(stack[i].frozen for i in stack.fp_indices), "flags restored"


def test_embed_changes_nothing_and_restores_flags():
    X = images(100)
    stack = small_stack()
    stack.fit(X[:60])
    stack[2].freeze()
    before = snapshot(stack)
    feats = stack.embed(X[60:], stage=2)
    assert feats.shape == (40, 6 * 4 * 4)
    assert stack.embed(X[60:]).shape == (40, 10)
    for k, v in snapshot(stack).items():
        assert torch.equal(v, before[k]), k
    assert stack.training and stack[2].frozen and not stack[0].frozen


def test_switches_pass_through_the_stack():
    stack = small_stack(k_winners=1, k_output=True)
    stack.fit(images(100), schedule="joint")
    out = stack.outputs(images(20))
    assert ((out[0] != 0).sum(1) <= 1).all()


def test_conv_stack_shapes_and_learning():
    stack = conv_stack(1, (8, 8), channels=(4, 6), kernel_size=3, out_features=12, t_decay=0.02, seed=0)
    assert [type(m).__name__ for m in stack.layers] == ["FpConv2d", "MaxPool2d", "FpConv2d",
                                                        "MaxPool2d", "Flatten", "FpLinear"]
    stack.fit(images(100))
    assert stack(images(5)).shape == (5, 12)
    assert not torch.equal(stack[0].weight, FpConv2d(1, 4, 3, seed=0).weight)


@pytest.mark.parametrize("make, message", [
    (lambda: FpStack(), "at least one module"),
    (lambda: FpStack(nn.ReLU()), "at least one Fp layer"),
    (lambda: FpStack(FpLinear(4, 2), "relu"), "torch modules"),
    (lambda: small_stack().fit(images(10), schedule="backprop"), "schedule"),
    (lambda: small_stack().fit(images(10), epochs=0), "epochs"),
    (lambda: small_stack().embed(images(10), stage=9), "stage"),
    (lambda: conv_stack(1, (8, 8), channels=(4, 4, 4, 4)), "leave nothing"),
])
def test_bad_use_is_rejected(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def stats_stack(mode="sequential", norm=None):
    """Fp layer -> pool -> statistics module -> Fp layer -> pool -> statistics module (trailing)."""
    from fpwb.nets import ChannelStandardize
    make = norm or (lambda c: ChannelStandardize(c))
    return FpStack(FpConv2d(1, 4, 3, padding=1, t_decay=0.02, seed=0, mode=mode), nn.MaxPool2d(2),
                   make(4), FpConv2d(4, 6, 3, padding=1, t_decay=0.02, seed=1, mode=mode),
                   nn.MaxPool2d(2), make(6))


@pytest.mark.parametrize("mode", ["sequential", "batch"])
@pytest.mark.parametrize("norm", ["standardize", "batchnorm"])
def test_greedy_with_statistics_equals_the_stages_by_hand(mode, norm):
    """Greedy: layer 0 learns; the statistics in front of layer 3 collect over one pass in data
    order with layer 0 fixed; layer 3 learns with them fixed; the trailing statistics last."""
    make = None if norm == "standardize" else (lambda c: nn.BatchNorm2d(c, affine=False))
    X = images(200)
    a, b = stats_stack(mode, make), stats_stack(mode, make)
    a.fit(X, epochs=2, batch_size=64, schedule="greedy", seed=5)
    g = torch.Generator().manual_seed(5)
    b.eval()
    b[0].train()
    for _ in range(2):
        order = torch.randperm(len(X), generator=g)
        for s in range(0, len(X), 64):
            b[0](X[order[s:s + 64]])
    b.eval()
    b[2].train()
    for s in range(0, len(X), 64):
        b(X[s:s + 64], upto=2)
    b.eval()
    b[3].train()
    for _ in range(2):
        order = torch.randperm(len(X), generator=g)
        for s in range(0, len(X), 64):
            b(X[order[s:s + 64]], upto=3)
    b.eval()
    b[5].train()
    for s in range(0, len(X), 64):
        b(X[s:s + 64])
    for k, v in snapshot(a).items():
        assert torch.equal(v, snapshot(b)[k]), k
    assert int(a[3].fire_count.sum()) > 0
    assert a.training and all(m.training for m in a.layers), "modes restored"


@pytest.mark.parametrize("mode", ["sequential", "batch"])
def test_joint_with_statistics_equals_the_passes_by_hand(mode):
    X = images(120)
    a, b = stats_stack(mode), stats_stack(mode)
    a.fit(X, epochs=2, batch_size=40, schedule="joint", seed=1)
    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        order = torch.randperm(len(X), generator=g)
        for s in range(0, len(X), 40):
            b(X[order[s:s + 40]])
    for k, v in snapshot(a).items():
        assert torch.equal(v, snapshot(b)[k]), k


def test_wrapped_layers_count_as_fp_layers_and_frozen_ones_keep_their_kernels():
    from fpwb.nets import Readout
    from fpwb.layers.stack import fp_layer_of, has_statistics
    stack = FpStack(Readout(FpConv2d(1, 4, 3, padding=1, t_decay=0.02, seed=0)), nn.MaxPool2d(2),
                    nn.BatchNorm2d(4, affine=False), Readout(FpConv2d(4, 5, 3, padding=1, seed=1), "relu"))
    assert stack.fp_indices == [0, 3] and stack.fp_layers()[1] is fp_layer_of(stack[3])
    assert has_statistics(stack[2]) and not has_statistics(stack[1]) and not has_statistics(stack[0])
    before = stack.fp_layers()[1].weight.clone()
    stack.fp_layers()[1].freeze()
    stack.fit(images(100), schedule="greedy")
    assert torch.equal(stack.fp_layers()[1].weight, before)
    assert int(stack[2].num_batches_tracked) == 1, "one statistics pass (100 images, one batch)"
    assert stack.embed(images(3), stage=1, flatten=False).shape == (3, 4, 4, 4)
