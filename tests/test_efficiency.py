import pytest
import torch

from fpwb.studies import efficiency


def test_stacks_have_the_same_shape():
    fp = efficiency.frontprop_stack(20, (8, 4))
    bp = efficiency.backprop_stack(20, (8, 4), n_classes=3)
    assert [tuple(m.weight.shape) for m in fp] == [(8, 20), (4, 8)]
    assert [tuple(m.weight.shape) for m in bp if isinstance(m, torch.nn.Linear)] == [(8, 20), (4, 8), (3, 4)]


def test_counted_memory_in_process():
    kwargs = dict(in_features=20, n_classes=3, batch_size=8, n_samples=16, isolate=False)
    bp = efficiency.measure("backprop", (8, 4), **kwargs)
    # Adam keeps two moments per parameter; gradients as large as the parameters
    assert bp["grads_bytes"] == bp["params_bytes"] > 0
    assert bp["optimizer_bytes"] >= 2 * bp["params_bytes"]
    assert bp["saved_bytes"] > 0 and bp["us_per_sample"] > 0
    fp = efficiency.measure("frontprop", (8, 4), **kwargs)
    assert fp["grads_bytes"] == fp["optimizer_bytes"] == fp["saved_bytes"] == 0
    assert fp["params_bytes"] > 0


def test_isolated_measure_and_plot():
    row = efficiency.measure("frontprop-batch", (16,), in_features=20, batch_size=8, n_samples=16)
    assert row["peak_mb"] >= 0 and row["peak_method"]
    fig = efficiency.plot([row, {**row, "mode": "backprop", "widths": [32]}])
    assert len(fig.axes) == 2


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        efficiency.measure("sideways", (4,), isolate=False)
    with pytest.raises(ValueError, match="widths"):
        efficiency.measure("backprop", (), isolate=False)
