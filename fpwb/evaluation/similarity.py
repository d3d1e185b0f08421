"""Compare representations: linear CKA, weight matching, and the supervised backprop layer they are
compared with.

``linear_cka(X, Y)`` (Kornblith et al. 2019, "Similarity of Neural Network Representations
Revisited", eq. for linear kernels): with both feature matrices (n, p) and (n, q) centred over the
samples,

    CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F * ||Yc^T Yc||_F)

1 for representations equal up to an orthogonal map and an overall scale, 0 for representations
with no linear relation; invariant to neuron order, so two layers need not line their neurons up.

``backprop_layer`` is the supervised upper reference of the probe table: a layer of the same shape
as a Frontprop layer (unit-length weights, features = max(0, cosine), no bias) whose weights are
trained with backprop through a linear softmax head on the labels. It comes back as a frozen
FpLinear, so ``fpwb.evaluation.probes.embed(layer, X, readout="relu")`` gives exactly the features it was
trained with, and the probe table treats it like any baseline.
"""
from __future__ import annotations

import torch

from ..layers.base import unit_rows
from ..data import flatten


def _matrix(name, X) -> torch.Tensor:
    X = torch.as_tensor(X)
    if X.dim() != 2 or len(X) < 2:
        raise ValueError(f"{name}: expected features (n, p) with n >= 2, got {tuple(X.shape)}")
    return X.double()


def linear_cka(X, Y) -> float:
    """Linear CKA between two representations of the same n samples: X (n, p), Y (n, q).

    Returns a float in [0, 1]; NaN when either representation is constant over the samples.
    Computed in float64 from the (p, q) cross-covariance, so memory is p*q, not n*n.
    """
    X, Y = _matrix("X", X), _matrix("Y", Y)
    if len(X) != len(Y):
        raise ValueError(f"X and Y must hold the same samples, got {len(X)} and {len(Y)} rows")
    X = X - X.mean(0)
    Y = Y - Y.mean(0)
    cross = (Y.T @ X).square().sum()
    norm = (X.T @ X).norm() * (Y.T @ Y).norm()
    return float(cross / norm) if norm > 0 else float("nan")


def weight_match(A, B) -> torch.Tensor:
    """For each row (neuron) of A (N, D), the best cosine with any row of B (M, D): (N,).

    Values near 1: that neuron has a near copy in B."""
    A, B = torch.as_tensor(A).float(), torch.as_tensor(B).float()
    A = A.reshape(len(A), -1)
    B = B.reshape(len(B), -1)
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"weights must have the same input size, got {A.shape[1]} and {B.shape[1]}")
    return (unit_rows(A)[0] @ unit_rows(B)[0].T).max(1).values


def backprop_layer(X, y, n_neurons: int, seed: int = 0, *, epochs: int = 10, lr: float = 0.01,
                   batch_size: int = 128, weight_decay: float = 0.0, return_history: bool = False):
    """A supervised layer of n_neurons trained with backprop, as a frozen FpLinear.

    Model: h = max(0, cos(w_j, x)) for each neuron j (unit-length rows w_j, the inputs scaled to
    unit length: the Frontprop layer's own ``relu`` readout), logits = V h + c. The rows of W
    (reparametrised as W = U / ||U|| per row), V and c are trained together with Adam (lr,
    weight_decay) on the cross-entropy of the labels y, ``epochs`` passes in seeded shuffled
    mini-batches; the head is then dropped. X: (n, ...) images or rows; y: (n,) labels.

    With return_history: (layer, {"loss": per-epoch mean loss, "train_accuracy": per epoch}).
    """
    from ..baselines import layer_from_weights

    if isinstance(n_neurons, bool) or not isinstance(n_neurons, int) or n_neurons < 1:
        raise ValueError(f"n_neurons must be a positive int, got {n_neurons!r}")
    X = torch.as_tensor(X)
    y = torch.as_tensor(y).long()
    if X.dim() < 2 or len(X) != len(y) or len(X) == 0:
        raise ValueError(f"expected samples (n, ...) and labels (n,), got {tuple(X.shape)} and {tuple(y.shape)}")
    unit, _ = unit_rows(flatten(X).float())
    classes, target = torch.unique(y, return_inverse=True)
    generator = torch.Generator().manual_seed(seed)
    U = torch.nn.Parameter(torch.randn(n_neurons, unit.shape[1], generator=generator))
    head = torch.nn.Linear(n_neurons, len(classes))
    with torch.no_grad():
        bound = 1 / n_neurons ** 0.5
        head.weight.copy_(torch.empty_like(head.weight).uniform_(-bound, bound, generator=generator))
        head.bias.zero_()
    optimizer = torch.optim.Adam([U, *head.parameters()], lr=lr, weight_decay=weight_decay)
    history = {"loss": [], "train_accuracy": []}
    for _ in range(epochs):
        order = torch.randperm(len(unit), generator=generator)
        total, correct = 0.0, 0
        for start in range(0, len(unit), batch_size):
            index = order[start:start + batch_size]
            W = U / U.norm(dim=1, keepdim=True)
            logits = head((unit[index] @ W.T).clamp_min(0))
            loss = torch.nn.functional.cross_entropy(logits, target[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(index)
            correct += int((logits.detach().argmax(1) == target[index]).sum())
        history["loss"].append(total / len(unit))
        history["train_accuracy"].append(correct / len(unit))
    layer = layer_from_weights(U.detach())
    return (layer, history) if return_history else layer
