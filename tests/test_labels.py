import pytest
import torch

import fpwb
from fpwb.studies.labels import LabelCode, label_scores, neuron_labels, read_labels


def test_encode_appends_a_scaled_one_hot_and_blank_appends_zeros():
    X = torch.tensor([[3.0, 4.0], [0.0, 1.0]])  # lengths 5 and 1
    code = LabelCode(3, repeat=2, strength=0.5)
    coded = code.encode(X, torch.tensor([2, 0]))
    assert coded.shape == (2, 2 + 6)
    sample, part = code.split(coded)
    assert torch.equal(sample, X)
    assert torch.allclose(part.norm(dim=1), torch.tensor([2.5, 0.5]))  # strength x sample length
    assert torch.equal(code.decode(part).argmax(1), torch.tensor([2, 0]))
    assert torch.allclose(part[0], torch.tensor([0, 0, 0, 0, 1, 1]) * 2.5 / 2 ** 0.5)
    blank = code.blank(X)
    assert torch.equal(blank[:, :2], X) and not blank[:, 2:].any()


def test_absolute_code_and_images():
    code = LabelCode(4, strength=1.0, relative=False)
    coded = code.encode(torch.zeros(3, 1, 2, 2), torch.tensor([0, 1, 3]))
    assert coded.shape == (3, 8)
    assert torch.equal(coded[:, 4:], torch.eye(4)[[0, 1, 3]])


@pytest.mark.parametrize("kwargs", [{"n_classes": 1}, {"n_classes": 3, "repeat": 0},
                                    {"n_classes": 3, "strength": -1}])
def test_bad_codes(kwargs):
    with pytest.raises(ValueError):
        LabelCode(**kwargs)


def test_bad_labels():
    code = LabelCode(3)
    with pytest.raises(ValueError, match="labels must lie"):
        code.encode(torch.ones(2, 4), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="2 samples but 3 labels"):
        code.encode(torch.ones(2, 4), torch.tensor([0, 1, 2]))


def test_label_read_back_from_hand_made_neurons():
    code = LabelCode(2, strength=1.0)
    layer = fpwb.FpLinear(4 + 2, 2)
    # neuron 0 holds pattern A with label 0, neuron 1 pattern B with label 1
    A, B = torch.tensor([1.0, 1, 0, 0]), torch.tensor([0.0, 0, 1, 1])
    layer.weight.copy_(torch.nn.functional.normalize(code.encode(torch.stack([A, B]), torch.tensor([0, 1])), dim=1))
    assert torch.equal(neuron_labels(layer, code), torch.tensor([0, 1]))
    X = torch.stack([A, B, 0.9 * B + 0.1 * A])
    assert torch.equal(read_labels(layer, code.blank(X), code, readout="topk", k=1), torch.tensor([0, 1, 1]))
    assert label_scores(layer, code.blank(X), code, readout="relu").shape == (3, 2)


def test_layer_learning_with_labels_reads_them_back():
    g = torch.Generator().manual_seed(0)
    prototypes = torch.eye(8)[:4] + 0.05
    y = torch.randint(0, 4, (600,), generator=g)
    X = prototypes[y] + 0.05 * torch.rand(600, 8, generator=g)
    code = LabelCode(4, strength=1.0)
    layer = fpwb.FpLinear(8 + 4, 16, w_boost=0.05, t_decay=0.01, seed=0)
    layer(code.encode(X, y))
    accuracy = (read_labels(layer, code.blank(X[:100]), code) == y[:100]).float().mean()
    assert accuracy > 0.9
