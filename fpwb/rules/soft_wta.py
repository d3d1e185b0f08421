"""Soft winner-take-all with anti-Hebbian plasticity (SoftHebb: Moraitis et al. 2022; Journé,
Garcia Rodriguez, Guo and Moraitis, "Hebbian deep learning without feedback", ICLR 2023).

Every neuron learns at every position, weighted by a softmax over the layer's activations u = W x
at temperature ``temperature``: ``y = softmax(u / temperature)``. With ``anti_hebbian`` (the ICLR
2023 form) the winner (largest u) keeps +y and every other neuron takes -y, so the losers move
away from the input. The move is the SoftHebb plasticity rule,
``w_k <- w_k + w_boost * y_k * (x - u_k * w_k)`` (``fpwb.rules.competitive``, with g = y).
"""
import torch

from .base import check_number
from .competitive import CompetitiveRule


class SoftWTA(CompetitiveRule):
    """SoftHebb's soft winner-take-all; every neuron learns at every position."""

    name = "soft_wta"

    def __init__(self, temperature: float = 0.05, anti_hebbian: bool = True):
        self.temperature = check_number("temperature", temperature, low=0.0, low_open=True)
        if not isinstance(anti_hebbian, bool):
            raise ValueError(f"anti_hebbian must be True or False, got {anti_hebbian!r}")
        self.anti_hebbian = anti_hebbian

    def settings(self):
        return {"temperature": self.temperature, "anti_hebbian": self.anti_hebbian}

    def strengths(self, u):
        """The plasticity's post-synaptic term: the softmax, negated for all but the winner with
        ``anti_hebbian``."""
        y = torch.softmax(u / self.temperature, dim=-1)
        if self.anti_hebbian:
            winner = torch.nn.functional.one_hot(u.argmax(-1), u.shape[-1]).bool()
            y = torch.where(winner, y, -y)
        return y
