import pytest
import torch

from fpwb.baselines.forward_forward import ForwardForward, forward_forward


def toy(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 8, generator=g)
    return X, (X[:, :4].sum(1) > X[:, 4:].sum(1)).long()


def test_learns_a_separable_toy_problem():
    torch.set_num_threads(1)
    X, y = toy(400)
    model = forward_forward(X[:300], y[:300], 32, epochs=30, batch_size=32, lr=0.03)
    assert len(model.layers) == 2 and model.history[-1] < model.history[0]
    assert (model.predict(X[300:]) == y[300:]).float().mean() > 0.85
    assert model.label_goodness(X[:5]).shape == (5, 2)
    assert model.features(X[:5]).shape == (5, 64)


def test_inputs_carry_the_label():
    model = ForwardForward(3, 4, (5,))
    rows = model.with_label(torch.zeros(2, 3), torch.tensor([1, 3]))
    assert torch.equal(rows[:, 3:], torch.eye(4)[[1, 3]])
    assert torch.allclose(model.neutral(torch.zeros(1, 3))[0, 3:], torch.full((4,), 0.25))
    with pytest.raises(ValueError, match="expected 3 input values"):
        model.features(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="widths"):
        ForwardForward(3, 4, ())
