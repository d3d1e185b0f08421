"""to_frontprop: an existing torch model with its nn.Linear / nn.Conv2d swapped for Fp layers."""
import pytest
import torch
from torch import nn

from fpwb import FpConv2d, FpLinear
from fpwb.layers.convert import to_frontprop


class Net(nn.Module):
    """A custom forward (not a Sequential): the conversion must keep it."""

    def __init__(self, bias=False):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=bias), nn.ReLU(),
                                      nn.MaxPool2d(2), nn.Conv2d(4, 8, 3, stride=2, padding="valid", bias=bias))
        self.head = nn.Linear(8 * 1 * 1, 5, bias=bias)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


def test_layers_are_swapped_shape_for_shape():
    model = Net()
    x = torch.rand(6, 1, 6, 6)
    fp, report = to_frontprop(model, w_boost=0.05, t_decay=0.01, seed=0, k_winners=2)
    assert isinstance(fp.features[0], FpConv2d) and isinstance(fp.features[3], FpConv2d)
    assert isinstance(fp.head, FpLinear)
    assert fp(x).shape == model(x).shape
    for name in ("features.0", "features.3", "head"):
        old, new = model.get_submodule(name), fp.get_submodule(name)
        assert old.weight.shape == new.weight.shape
    assert fp.features[3].stride == (2, 2) and fp.features[3].padding == (0, 0)
    assert fp.head.w_boost == 0.05 and fp.head.k_winners == 2
    assert not torch.equal(fp.features[0].weight.flatten(1), fp.features[3].weight.flatten(1)[:4, :9])
    assert [r[0] for r in report.replaced] == ["features.0", "features.3", "head"]
    assert "3 layer(s) replaced" in str(report)
    assert isinstance(model.head, nn.Linear), "the original model is untouched"


def test_converted_model_learns_in_the_forward_pass():
    fp, _ = to_frontprop(Net(), t_decay=0.05, seed=0)
    before = fp.features[0].weight.clone()
    for _ in range(5):
        fp(torch.rand(20, 1, 6, 6))
    assert not torch.equal(before, fp.features[0].weight)
    assert list(fp.parameters()) == []
    fp.eval()
    state = {k: v.clone() for k, v in fp.state_dict().items()}
    fp(torch.rand(4, 1, 6, 6))
    assert all(torch.equal(v, fp.state_dict()[k]) for k, v in state.items())


def test_bias_is_refused_or_reported():
    with pytest.raises(ValueError, match=r"features\.0: has a bias(.|\n)*head: has a bias"):
        to_frontprop(Net(bias=True))
    fp, report = to_frontprop(Net(bias=True), bias="drop")
    assert report.dropped_bias == ["features.0", "features.3", "head"]
    assert "bias dropped" in str(report)


def test_same_padding_maps_to_symmetric_padding():
    fp, _ = to_frontprop(nn.Sequential(nn.Conv2d(2, 3, 5, padding="same", bias=False)))
    assert fp[0].padding == (2, 2)


@pytest.mark.parametrize("model, message", [
    (nn.Sequential(nn.Conv2d(2, 4, 3, dilation=2, bias=False)), "dilation"),
    (nn.Sequential(nn.Conv2d(2, 4, 3, groups=2, bias=False)), "groups"),
    (nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect", bias=False)), "padding_mode"),
    (nn.Sequential(nn.Conv2d(2, 4, 4, padding="same", bias=False)), "pads unevenly"),
    (nn.Sequential(nn.Conv1d(2, 4, 3), nn.Linear(4, 2, bias=False)), "Conv1d has parameters"),
    (nn.Sequential(nn.ReLU()), "no nn.Linear or nn.Conv2d"),
    (nn.Linear(3, 2), "single layer"),
])
def test_what_cannot_be_mapped_is_refused_before_anything_changes(model, message):
    before = repr(model)
    with pytest.raises(ValueError, match=message):
        to_frontprop(model, inplace=True)
    assert repr(model) == before


def test_non_strict_keeps_other_layers_and_lists_them():
    model = nn.Sequential(nn.Linear(6, 4, bias=False), nn.BatchNorm1d(4), nn.Linear(4, 2, bias=False))
    with pytest.raises(ValueError, match="BatchNorm1d"):
        to_frontprop(model)
    fp, report = to_frontprop(model, strict=False, inplace=True)
    assert fp is model and isinstance(model[0], FpLinear) and isinstance(model[1], nn.BatchNorm1d)
    assert report.kept == ["1"]
    assert model(torch.rand(8, 6)).shape == (8, 2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="bias must be"):
        to_frontprop(Net(), bias="keep")
    with pytest.raises(ValueError, match="w_boost"):
        to_frontprop(Net(), w_boost=-1)
