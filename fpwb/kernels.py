"""Compiled per-neuron scans for the exact sequential rule on CPU (numba).

Neurons never interact under the Frontprop rule, so each neuron can walk a chunk of positions on
its own. The scans run single-threaded on purpose: numba's worker threads and torch's (which run
the matmuls around them) spin against each other, and measured ten times slower in parallel. Both
scans take scaled projections ``u = (w . x) * r**-e``
and scaled threshold levels (see ``fpwb.engine``), and stop doing work for a neuron that does not
fire. They differ in how a neuron's later projections follow its weight change:

- ``scan_gram`` (wide inputs, few positions): after a firing at i with value y, the new weight is
  (a w + b x_i) / n with a = 1 - w_boost, b = w_boost and n = sqrt(a^2 + b^2 + 2 a b y) (unit w and
  x), so every later projection updates from the chunk's Gram matrix in O(positions), and the
  final weight is a linear combination of the start weight and the inputs it fired on.
- ``scan_direct`` (narrow inputs such as conv patches): the weight is updated in place exactly as
  in the per-sample rule and later projections are recomputed as dot products, O(inputs) each.
"""
import math

import numba
import numpy as np


@numba.njit(cache=True)
def scan_gram(u, gram, inv_scale, valid, slot, level, w_boost, out, coef_x, coef_w):
    """u (A, P) scaled projections, gram (P, P) scaled ``x_i . x_k * r**-e_k``; in place:
    level (A, S), out (A, P) fired values, coef_x (A, P) and coef_w (A,) giving the final weights
    ``coef_w * w + coef_x @ x`` (before a last renormalisation)."""
    a = 1.0 - w_boost
    n_neurons, n_pos = u.shape
    for j in range(n_neurons):
        keep = 1.0  # coefficient of the start weight so far
        for i in range(n_pos):
            if not valid[i] or u[j, i] < level[j, slot[i]]:
                continue
            y = u[j, i] * inv_scale[i]
            out[j, i] = y
            level[j, slot[i]] = u[j, i]
            norm = math.sqrt(a * a + w_boost * w_boost + 2.0 * a * w_boost * y)
            c = a / norm
            d = w_boost / norm
            for k in range(i + 1, n_pos):
                u[j, k] = c * u[j, k] + d * gram[i, k]
            keep *= c
            coef_x[j, i] = d / keep  # times the final ``keep``: the decay of later updates
        coef_w[j] = keep
        if keep != 1.0:
            for i in range(n_pos):
                coef_x[j, i] *= keep


@numba.njit(cache=True)
def scan_direct(u, x, weight, scale, valid, slot, level, w_boost, out):
    """u (A, P) scaled projections with the start weights, x (P, K) unit rows; in place:
    weight (A, K), level (A, S), out (A, P) fired values."""
    n_neurons, n_pos = u.shape
    dim = x.shape[1]
    for j in range(n_neurons):
        moved = False
        for i in range(n_pos):
            if not valid[i]:
                continue
            if moved:
                y = 0.0
                for k in range(dim):
                    y += weight[j, k] * x[i, k]
                scaled = y * scale[i]
            else:
                scaled = u[j, i]
                y = scaled / scale[i]
            if scaled < level[j, slot[i]]:
                continue
            out[j, i] = y
            level[j, slot[i]] = scaled
            norm = 0.0
            for k in range(dim):
                weight[j, k] += w_boost * (x[i, k] - weight[j, k])
                norm += weight[j, k] * weight[j, k]
            norm = math.sqrt(norm)
            for k in range(dim):
                weight[j, k] /= norm
            moved = True


def as_array(t):
    """A contiguous numpy view of a CPU tensor (copy only when not contiguous)."""
    return np.ascontiguousarray(t.numpy())
