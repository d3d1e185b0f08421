"""Frontprop, the plain rule: a fired neuron moves toward the input and is renormalised,
``w <- normalise(w + w_boost * (x - w))``; its threshold becomes y."""
from .base import Rule


def update(y, w_boost, count, step, params):
    """w' = (1 - w_boost) w + w_boost x (then renormalised)."""
    return 1.0 - w_boost, w_boost


def batch_update(ys, n, w_boost, count, step, params, d):
    """n firings of one batch chunk combine into one move toward the mean m of their inputs,
    worth n sequential steps: ``w + (1 - (1 - w_boost)**n) * (m - w)`` (n = 1 is the sequential
    update)."""
    keep = (1.0 - w_boost) ** n
    for i in range(n):
        d[i] = (1.0 - keep) / n
    return keep


class Frontprop(Rule):
    """The plain Frontprop rule (the default of every layer)."""

    name = "frontprop"
    update = update
    constant_update = True
    batch_update = batch_update
