"""Per-neuron learning rate: each neuron learns with ``1 / (count + offset)``, where count is how
often it learned before, times a global annealing factor ``1 / (1 + step / anneal_steps)``.

The move is the Frontprop one, ``normalise(w + rate * (x - w))`` (``w_boost`` is not used). With
``offset=1`` a neuron's first learning copies the input, and its weight is the running mean of
every input it learned on, so with one winner per sample (``k_winners=1``) the layer is online
k-means (MacQueen's 1967 update, what scikit-learn's ``MiniBatchKMeans`` does with batches of
one): spherical k-means with ``normalize=True`` (rows renormalised after every move), plain
k-means on the layer's unit inputs with ``normalize=False``.
"""
from .base import Rule, check_number


def update(y, w_boost, count, step, params):
    """w' = (1 - rate) w + rate x, rate = 1 / (count + offset) / (1 + step / anneal_steps)."""
    rate = 1.0 / (count + params[0]) / (1.0 + step * params[1])
    return 1.0 - rate, rate


def batch_update(ys, n, w_boost, count, step, params, d):
    """n learnings of one batch chunk, composed as n sequential moves with the weights held:
    input i keeps ``rate_i * prod_{l > i} (1 - rate_l)``, the start weight ``prod (1 - rate_i)``.
    The annealing factor is the chunk start's."""
    tail = 1.0
    for i in range(n - 1, -1, -1):
        rate = 1.0 / (count + i + params[0]) / (1.0 + step * params[1])
        d[i] = rate * tail
        tail *= 1.0 - rate
    return tail


class PerNeuronRate(Rule):
    """Frontprop with a per-neuron 1/n learning rate (online k-means with one winner)."""

    name = "per_neuron_rate"
    update = update
    batch_update = batch_update

    def __init__(self, offset: float = 1.0, anneal_steps=None, normalize: bool = True):
        self.offset = check_number("offset", offset, low=0.0, low_open=True)
        self.anneal_steps = None if anneal_steps is None else check_number(
            "anneal_steps", anneal_steps, low=0.0, low_open=True)
        if not isinstance(normalize, bool):
            raise ValueError(f"normalize must be True or False, got {normalize!r}")
        self.renormalise = normalize

    def params(self):
        return (self.offset, 0.0 if self.anneal_steps is None else 1.0 / self.anneal_steps)

    def settings(self):
        return {"offset": self.offset, "anneal_steps": self.anneal_steps, "normalize": self.renormalise}
