"""What a layer's neurons are doing: how many ever fired, how many learned, how many duplicate
each other, which classes each fires for."""
from __future__ import annotations

import torch

from ..layers.base import FpLayer, unit_rows
from .probes import embed


#: Below this share of learned neurons a configuration is flagged in tables: it is mostly an
#: untrained random layer (``learned_share``).
FEW_LEARNED = 0.5


def _check_layer(layer):
    if not isinstance(layer, FpLayer):
        raise ValueError(f"expected an FpLinear or FpConv2d, got {type(layer).__name__}")


def fired_share(layer: FpLayer) -> float:
    """Share of neurons that fired at least once while the layer was learning (``fire_count`` > 0)."""
    _check_layer(layer)
    return float((layer.fire_count > 0).float().mean())


def learned_neurons(layer: FpLayer, initial_weight, tolerance: float = 1e-6) -> torch.Tensor:
    """Which neurons learned: their weights moved away from ``initial_weight`` (the layer's weight
    before training, same shape) by more than ``tolerance`` (largest absolute change). Weights move
    only while a layer learns, so a neuron that moved fired (or, under a rule where every neuron
    learns, took part) while learning. # (N,) bool"""
    _check_layer(layer)
    initial = torch.as_tensor(initial_weight).to(layer.weight)
    if initial.shape != layer.weight.shape:
        raise ValueError(f"initial_weight must have the layer's weight shape {tuple(layer.weight.shape)}, "
                         f"got {tuple(initial.shape)}")
    change = (layer.weight - initial).reshape(len(initial), -1).abs().amax(1)  # (N,)
    return change > tolerance


def learned_share(layer: FpLayer, initial_weight, tolerance: float = 1e-6) -> float:
    """Share of neurons that learned (see :func:`learned_neurons`). An untrained layer scores 0: a
    configuration where most neurons never learned is mostly a random layer."""
    return float(learned_neurons(layer, initial_weight, tolerance).float().mean())


def learned_flag(share: float) -> str:
    """The share of learned neurons for a printed table, ``0.82``, or ``0.31 (few learned)`` when
    it is below FEW_LEARNED."""
    return f"{share:.2f}" + (" (few learned)" if share < FEW_LEARNED else "")


def redundant_pairs(layer: FpLayer, cosine: float = 0.95) -> torch.Tensor:
    """Pairs (i, j), i < j, of neurons whose weights have cosine similarity above ``cosine``. # (P, 2)"""
    _check_layer(layer)
    if not -1 <= cosine <= 1:
        raise ValueError(f"cosine must lie in [-1, 1], got {cosine!r}")
    weight, _ = unit_rows(layer.weight.reshape(len(layer.weight), -1))
    similar = torch.triu(weight @ weight.T > cosine, diagonal=1)  # (N, N), each pair once
    return similar.nonzero()


def redundancy(layer: FpLayer, cosine: float = 0.95) -> dict:
    """How much the layer repeats itself: {pairs: redundant pairs, neurons: share of neurons in at
    least one such pair, cosine}."""
    pairs = redundant_pairs(layer, cosine)
    n = len(layer.weight)
    return {"pairs": len(pairs), "neurons": len(torch.unique(pairs)) / n, "cosine": cosine}


def class_coverage(layer: FpLayer, X, y, n_classes: int | None = None,
                   batch_size: int = 1024) -> torch.Tensor:
    """How often each neuron fires for each class on (X, y), frozen: counts (N, n_classes), long.

    A neuron fires for a sample when its thresholded output is non-zero (for FpConv2d: anywhere
    in the map). ``(counts > 0).sum(1)`` is how many classes each neuron fires for; a row of zeros
    is a neuron that never fires on this data. The layer's state is untouched.
    """
    _check_layer(layer)
    y = torch.as_tensor(y).long()
    if y.dim() != 1 or len(y) != len(X):
        raise ValueError(f"expected labels (n,) for {len(X)} samples, got {tuple(y.shape)}")
    n_classes = int(y.max()) + 1 if n_classes is None else n_classes
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), got [{int(y.min())}, {int(y.max())}]")
    N = len(layer.weight)
    fired = embed(layer, X, batch_size, readout="fired").view(len(X), N, -1).ne(0).any(2)  # (n, N)
    return (fired.T.float() @ torch.nn.functional.one_hot(y, n_classes).float()).round().long()
