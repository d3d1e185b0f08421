"""Soft winner-take-all with anti-Hebbian plasticity (SoftHebb: Moraitis et al. 2022; Journé,
Garcia Rodriguez, Guo and Moraitis, "Hebbian deep learning without feedback", ICLR 2023).

Every neuron learns at every position, weighted by a softmax over the layer's activations u = W x
at temperature ``temperature``: ``y = softmax(u / temperature)``. With ``anti_hebbian`` (the ICLR
2023 form) the winner (largest u) keeps +y and every other neuron takes -y, so the losers move
away from the input. The move is the SoftHebb plasticity rule,
``w_k <- w_k + w_boost * y_k * (x - u_k * w_k)``, whose second term keeps the norms near 1 (no
renormalisation). Firing and thresholds are Frontprop's: a neuron fires (outputs u) where u >= t,
and its threshold becomes u there; they gate the output, not the learning.

Batch form (the paper trains in mini-batches): the weights are held over the chunk and the
updates of its positions are averaged, so a chunk moves the weights like one step of the mean
update (a sum over a long chunk, thousands of conv positions, would leave the finite numbers); a
chunk of one position is the sequential rule.
"""
import torch

from .base import Rule, check_number


class SoftWTA(Rule):
    """SoftHebb's soft winner-take-all; every neuron learns at every position."""

    name = "soft_wta"
    interacts = True
    renormalise = False
    max_w_boost = 1.0

    def __init__(self, temperature: float = 0.05, anti_hebbian: bool = True):
        self.temperature = check_number("temperature", temperature, low=0.0, low_open=True)
        if not isinstance(anti_hebbian, bool):
            raise ValueError(f"anti_hebbian must be True or False, got {anti_hebbian!r}")
        self.anti_hebbian = anti_hebbian

    def settings(self):
        return {"temperature": self.temperature, "anti_hebbian": self.anti_hebbian}

    def soft_targets(self, u):
        """The plasticity's post-synaptic term for activations u (..., N): the softmax, negated
        for all but the winner with ``anti_hebbian``."""
        y = torch.softmax(u / self.temperature, dim=-1)
        if self.anti_hebbian:
            winner = torch.nn.functional.one_hot(u.argmax(-1), u.shape[-1]).bool()
            y = torch.where(winner, y, -y)
        return y

    def step(self, weight, threshold, x, *, w_boost, count, step, k_output=False, **switches):
        u = weight @ x  # (N,)
        y = self.soft_targets(u)
        new_weight = weight + w_boost * y.unsqueeze(1) * (x - u.unsqueeze(1) * weight)
        fired = u >= threshold
        learned = torch.ones_like(fired)
        return new_weight, torch.where(fired, u, threshold), torch.where(fired, u, torch.zeros_like(u)), learned

    def batch_move(self, x, values, weight, *, w_boost, count, step):
        y = self.soft_targets(values)  # (P, N)
        weight += (w_boost / max(1, len(x))) * (y.T @ x - (y * values).sum(0).unsqueeze(1) * weight)
        count += len(x)
