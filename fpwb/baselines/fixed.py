"""Layers to compare Frontprop against, measured with the same readouts and probes.

Each baseline is an FpLinear whose weights come from elsewhere, frozen, so ``embed`` treats it
exactly as a trained Frontprop layer: an untrained random layer, k-means centroids, principal
components. Like the layer, they work on inputs scaled to unit length. Their thresholds stay at
the initial 1.0 (they never learned any), so their ``fired`` readout is all zeros: compare them
with the ``relu``, ``topk`` and ``linear`` readouts. Raw pixels need no layer: probe
``fpwb.data.flatten(X)``.
"""
from __future__ import annotations

import torch

from ..layers.base import unit_rows
from ..data import flatten
from ..layers.linear import FpLinear

BASELINES = ("random", "kmeans", "pca")


def _inputs(X) -> torch.Tensor:
    """Inputs as the layer sees them: flattened (n, D), each row scaled to unit length."""
    if not isinstance(X, torch.Tensor) or X.dim() < 2 or len(X) == 0:
        raise ValueError(f"expected a non-empty tensor of samples (n, ...), got {getattr(X, 'shape', type(X))}")
    unit, _ = unit_rows(flatten(X).float())
    return unit


def _check_size(n_neurons):
    if isinstance(n_neurons, bool) or not isinstance(n_neurons, int) or n_neurons < 1:
        raise ValueError(f"n_neurons must be a positive int, got {n_neurons!r}")


def layer_from_weights(weight) -> FpLinear:
    """A frozen FpLinear with these rows (N, D) as weights, each scaled to unit length."""
    weight = torch.as_tensor(weight, dtype=torch.float32)
    if weight.dim() != 2 or not bool((weight.norm(dim=1) > 0).all()):
        raise ValueError(f"weight must be (N, D) with no all-zero row, got {tuple(weight.shape)}")
    layer = FpLinear(weight.shape[1], weight.shape[0])
    layer.weight.copy_(unit_rows(weight)[0])
    return layer.freeze()


def random_layer(in_features: int, n_neurons: int, seed: int = 0) -> FpLinear:
    """An untrained FpLinear (Gaussian unit rows, as every layer starts), frozen."""
    _check_size(n_neurons)
    return FpLinear(in_features, n_neurons, seed=seed).freeze()


def kmeans_layer(X, n_neurons: int, seed: int = 0, batch_size: int = 2048) -> FpLinear:
    """MiniBatchKMeans centroids of the unit-length inputs as the weights (n_neurons clusters)."""
    from sklearn.cluster import MiniBatchKMeans

    _check_size(n_neurons)
    unit = _inputs(X)
    if n_neurons > len(unit):
        raise ValueError(f"k-means needs at least n_neurons={n_neurons} samples, got {len(unit)}")
    kmeans = MiniBatchKMeans(n_clusters=n_neurons, batch_size=batch_size, n_init=1,
                             random_state=seed).fit(unit.numpy())
    return layer_from_weights(torch.from_numpy(kmeans.cluster_centers_))


def pca_layer(X, n_neurons: int, seed: int = 0) -> FpLinear:
    """The leading principal components of the unit-length inputs as the weights.

    There are at most min(n, D) components: ask for more and the layer is that much smaller
    (check ``out_features``).
    """
    from sklearn.decomposition import PCA

    _check_size(n_neurons)
    unit = _inputs(X)
    n = min(n_neurons, *unit.shape)
    pca = PCA(n_components=n, svd_solver="randomized" if n < min(unit.shape) // 2 else "full",
              random_state=seed).fit(unit.numpy())
    return layer_from_weights(torch.from_numpy(pca.components_))
