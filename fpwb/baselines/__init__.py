"""What Frontprop is compared with: layers of the same shape that learned nothing (random) or
learned another way (k-means, PCA: ``fixed``), and the Forward-Forward network
(``forward_forward``).

May import: ``fpwb.layers``, ``fpwb.data``, ``fpwb.studies.labels``.
"""
from .fixed import BASELINES, kmeans_layer, layer_from_weights, pca_layer, random_layer

__all__ = ["BASELINES", "kmeans_layer", "layer_from_weights", "pca_layer", "random_layer"]
