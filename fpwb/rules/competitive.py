"""The shared form of the competitive Hebbian rules (soft winner-take-all, rank-k inhibition):
every neuron's move is ``w <- w + w_boost * g * (x - u * w)`` with u = W x and a per-neuron
strength g that the rule computes from the whole layer's activations (``strengths``); the
second term keeps the norms near 1 (no renormalisation). Firing and thresholds are Frontprop's: a
neuron fires (outputs u) where u >= t, and its threshold becomes u there; they gate the output,
not the learning.

Batch form (the papers train in mini-batches): the weights are held over the chunk and the
updates of its positions are averaged, so a chunk moves the weights like one step of the mean
update (a sum over a long chunk, thousands of conv positions, would leave the finite numbers); a
chunk of one position is the sequential rule.
"""
from .base import Rule


class CompetitiveRule(Rule):
    """Base of the rules whose learners depend on the whole layer at each position."""

    interacts = True
    renormalise = False
    max_w_boost = 1.0

    def strengths(self, u):
        """g (..., N) from activations u (..., N)."""
        raise NotImplementedError

    def step(self, weight, threshold, x, *, w_boost, count, step, k_output=False, **switches):
        u = weight @ x  # (N,)
        g = self.strengths(u)
        new_weight = weight + w_boost * g.unsqueeze(1) * (x - u.unsqueeze(1) * weight)
        fired = u >= threshold
        output = u.where(fired, u.new_zeros(()))
        return new_weight, u.where(fired, threshold), output, g != 0

    def batch_move(self, x, values, weight, *, w_boost, count, step):
        g = self.strengths(values)  # (P, N)
        weight += (w_boost / max(1, len(x))) * (g.T @ x - (g * values).sum(0).unsqueeze(1) * weight)
        count += (g != 0).sum(0)
