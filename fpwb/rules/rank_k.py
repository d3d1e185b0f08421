"""Rank-k anti-Hebbian inhibition (Krotov and Hopfield, "Unsupervised learning by competing
hidden units", PNAS 2019), with p = 2.

At each position the neurons are ranked by their activation u = W x: the most excited one learns
(g = 1), the ``rank``-th most excited is pushed away from the input by the factor ``delta``
(g = -delta), the others do not move. The move is their rule ``w <- w + w_boost * g * (x - u * w)``
(``fpwb.rules.competitive``). Ties in the ranking go to the lower index.
"""
import torch

from .base import check_number
from .competitive import CompetitiveRule


class RankK(CompetitiveRule):
    """Krotov-Hopfield competition: the winner learns, the rank-th neuron is pushed away."""

    name = "rank_k"

    def __init__(self, rank: int = 2, delta: float = 0.4):
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 2:
            raise ValueError(f"rank must be an int >= 2 (rank 1 is the winner), got {rank!r}")
        self.rank = rank
        self.delta = check_number("delta", delta, low=0.0)

    def settings(self):
        return {"rank": self.rank, "delta": self.delta}

    def strengths(self, u):
        """1 for the winner, -delta for the rank-th, 0 elsewhere."""
        order = torch.sort(u, dim=-1, descending=True, stable=True).indices
        g = torch.zeros_like(u)
        g.scatter_(-1, order[..., :1], 1.0)
        if u.shape[-1] >= self.rank:
            g.scatter_(-1, order[..., self.rank - 1:self.rank], -self.delta)
        return g
