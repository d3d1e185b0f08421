"""Rank-k anti-Hebbian inhibition (Krotov and Hopfield, "Unsupervised learning by competing
hidden units", PNAS 2019), with p = 2.

At each position the neurons are ranked by their activation u = W x: the most excited one learns
(g = 1), the ``rank``-th most excited is pushed away from the input by the factor ``delta``
(g = -delta), the others do not move. The move is their rule
``w <- w + w_boost * g * (x - u * w)``, whose second term keeps the norms near 1 (no
renormalisation). Firing and thresholds are Frontprop's: a neuron fires (outputs u) where u >= t,
and its threshold becomes u there; they gate the output, not the learning. Ties in the ranking go
to the lower index.

Batch form (the paper trains in mini-batches): the weights are held over the chunk and the
updates of its positions are averaged, so a chunk moves the weights like one step of the mean
update (a sum over a long chunk, thousands of conv positions, would leave the finite numbers); a
chunk of one position is the sequential rule.
"""
import torch

from .base import Rule, check_number


class RankK(Rule):
    """Krotov-Hopfield competition: the winner learns, the rank-th neuron is pushed away."""

    name = "rank_k"
    interacts = True
    renormalise = False
    max_w_boost = 1.0

    def __init__(self, rank: int = 2, delta: float = 0.4):
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 2:
            raise ValueError(f"rank must be an int >= 2 (rank 1 is the winner), got {rank!r}")
        self.rank = rank
        self.delta = check_number("delta", delta, low=0.0)

    def settings(self):
        return {"rank": self.rank, "delta": self.delta}

    def strengths(self, u):
        """g for activations u (..., N): 1 for the winner, -delta for the rank-th, 0 elsewhere."""
        order = torch.sort(u, dim=-1, descending=True, stable=True).indices
        g = torch.zeros_like(u)
        g.scatter_(-1, order[..., :1], 1.0)
        if u.shape[-1] >= self.rank:
            g.scatter_(-1, order[..., self.rank - 1:self.rank], -self.delta)
        return g

    def step(self, weight, threshold, x, *, w_boost, count, step, k_output=False, **switches):
        u = weight @ x  # (N,)
        g = self.strengths(u)
        new_weight = weight + w_boost * g.unsqueeze(1) * (x - u.unsqueeze(1) * weight)
        fired = u >= threshold
        return new_weight, torch.where(fired, u, threshold), torch.where(fired, u, torch.zeros_like(u)), g != 0

    def batch_move(self, x, values, weight, *, w_boost, count, step):
        g = self.strengths(values)  # (P, N)
        weight += (w_boost / max(1, len(x))) * (g.T @ x - (g * values).sum(0).unsqueeze(1) * weight)
        count += (g != 0).sum(0)
