import math

import pytest
import torch

from fpwb.evaluation.probes import embed
from fpwb.evaluation.similarity import backprop_layer, linear_cka, weight_match


def test_cka_hand_computed_case():
    # X = [[1,0],[0,1],[0,0]], Y = [[1],[0],[0]]: centred Xc = X - 1/3, Yc = [2/3,-1/3,-1/3]
    # Yc^T Xc = [2/3, -1/3]; ||.||^2 = 5/9.  Xc^T Xc = [[2/3,-1/3],[-1/3,2/3]], ||.||_F = sqrt(10)/3.
    # Yc^T Yc = 2/3.  CKA = (5/9) / (sqrt(10)/3 * 2/3) = 5 / (2 sqrt(10))
    X = torch.tensor([[1.0, 0], [0, 1], [0, 0]])
    Y = torch.tensor([[1.0], [0], [0]])
    assert linear_cka(X, Y) == pytest.approx(5 / (2 * math.sqrt(10)), abs=1e-12)
    assert linear_cka(Y, X) == pytest.approx(linear_cka(X, Y))


def test_cka_invariances_and_bounds():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(50, 6, generator=g)
    Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g))
    assert linear_cka(X, 3 * X @ Q + 1) == pytest.approx(1.0, abs=1e-10)  # rotation, scale, shift
    assert linear_cka(X, X[:, [2, 0, 1, 5, 4, 3]]) == pytest.approx(1.0, abs=1e-10)  # neuron order
    Z = torch.randn(50, 6, generator=g)
    assert 0 <= linear_cka(X, Z) < 0.5
    assert math.isnan(linear_cka(X, torch.ones(50, 3)))
    with pytest.raises(ValueError, match="same samples"):
        linear_cka(X, Z[:40])


def test_weight_match():
    A = torch.tensor([[1.0, 0], [0, 2]])
    B = torch.tensor([[0.0, 1], [1, 1]])
    assert torch.allclose(weight_match(A, B), torch.tensor([2 ** -0.5, 1.0]))


def test_backprop_layer_learns_a_separable_problem():
    g = torch.Generator().manual_seed(0)
    X = torch.rand(300, 6, generator=g)
    y = (X[:, 0] > X[:, 1]).long()
    layer, history = backprop_layer(X, y, 8, epochs=15, batch_size=32, return_history=True)
    assert layer.frozen and layer.weight.shape == (8, 6)
    assert torch.allclose(layer.weight.norm(dim=1), torch.ones(8))
    assert history["train_accuracy"][-1] > 0.9
    assert history["loss"][-1] < history["loss"][0]
    assert embed(layer, X, readout="relu").shape == (300, 8)
