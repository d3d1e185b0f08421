"""Oja's rule: a fired neuron moves by ``w_boost * y * (x - y * w)`` and is *not* renormalised.

Oja's rule keeps the norm near 1 by itself (one step changes |w|^2 by about
``w_boost^2 y^2 (1 - y^2)``), so y = w . x is a cosine times |w| under this rule. Large steps
(``w_boost * y^2`` near 2 and above) overshoot and diverge: the layer refuses ``w_boost`` >= 1.
"""
from .base import Rule


def update(y, w_boost, count, step, params):
    """w' = (1 - w_boost y^2) w + w_boost y x."""
    return 1.0 - w_boost * y * y, w_boost * y


def batch_update(ys, n, w_boost, count, step, params, d):
    """The summed Oja update over the chunk's firings: ``w + w_boost * sum_i y_i (x_i - y_i w)``."""
    keep = 1.0
    for i in range(n):
        keep -= w_boost * ys[i] * ys[i]
        d[i] = w_boost * ys[i]
    return keep


class Oja(Rule):
    """Oja's rule in place of the Frontprop move; firing and thresholds as in Frontprop."""

    name = "oja"
    renormalise = False
    max_w_boost = 1.0
    update = update
    batch_update = batch_update
