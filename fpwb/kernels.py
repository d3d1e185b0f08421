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
def scan_gram(u, gram, inv_scale, valid, slot, level, w_boost, out, coef_x, coef_w, oja=False):
    """u (A, P) scaled projections, gram (P, P) scaled ``x_i . x_k * r**-e_k``; in place:
    level (A, S), out (A, P) fired values, coef_x (A, P) and coef_w (A,) giving the final weights
    ``coef_w * w + coef_x @ x`` (before a last renormalisation; none under Oja's rule, whose
    update ``w + w_boost y (x - y w)`` is already of this form with c = 1 - w_boost y^2,
    d = w_boost y)."""
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
            if oja:
                c = 1.0 - w_boost * y * y
                d = w_boost * y
            else:
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
def scan_direct(u, x, weight, scale, valid, slot, level, w_boost, out, oja=False):
    """u (A, P) scaled projections with the start weights, x (P, K) unit rows; in place:
    weight (A, K), level (A, S), out (A, P) fired values. ``oja``: Oja's update, no
    renormalisation."""
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
            if oja:
                for k in range(dim):
                    weight[j, k] += w_boost * y * (x[i, k] - y * weight[j, k])
            else:
                norm = 0.0
                for k in range(dim):
                    weight[j, k] += w_boost * (x[i, k] - weight[j, k])
                    norm += weight[j, k] * weight[j, k]
                norm = math.sqrt(norm)
                for k in range(dim):
                    weight[j, k] /= norm
            moved = True


@numba.njit(cache=True, fastmath=True)
def _dot(a, b):
    """a . b with reassociation allowed (SIMD): the repulsion's cosines with every neuron."""
    acc = 0.0
    for k in range(a.shape[0]):
        acc += a[k] * b[k]
    return acc


@numba.njit(cache=True)
def scan_positions(u, x, gram, weight, scale, valid, slot, active, level, w_boost, k_winners,
                   repulsion, repulsion_cosine, oja, use_gram, out, won):
    """Position-major exact walk for neurons that interact (k-winners-take-all, repulsion).

    u (N, P) scaled projections with the start weights; x (P, K) unit rows; gram (P, P) scaled
    ``x_i . x_k * r**-e_k`` when ``use_gram`` (then u is kept current for every neuron: a move
    ``w' = (c w + d x_i + sum_m rho_m (w - w_m)) / n`` gives ``u' = (c u + d gram[i] +
    sum_m rho_m (u - u_m)) / n``, rho_m = repulsion / |w - w_m|), else unused and moved neurons' projections are
    recomputed as dot products; active (N,) neurons that cross a threshold somewhere with their
    start weights (the others can never fire: they only move when they fire). In place: weight
    (N, K), level (N, S), out (N, P) fired values, won (N, P) where a neuron learned.

    At each position: the fired neurons (y >= level), the k most excited of them learn
    (k_winners 0: all; ties go to the lower index), every learner's new weight is computed from
    the weights at the start of the position, then all are written.
    """
    n_neurons, n_pos = u.shape
    dim = x.shape[1]
    act = np.nonzero(active)[0]
    n_act = act.shape[0]
    moved = np.zeros(n_neurons, np.bool_)
    wnorm = np.empty(n_neurons)
    for m in range(n_neurons):
        acc = 0.0
        for k in range(dim):
            acc += weight[m, k] * weight[m, k]
        wnorm[m] = math.sqrt(acc)
    fired = np.empty(n_act, np.int64)
    fired_u = np.empty(n_act)
    chosen = np.zeros(n_act, np.bool_)
    learners = np.empty(n_act, np.int64)
    learner_u = np.empty(n_act)
    new_w = np.empty((n_act, dim), weight.dtype)
    new_u = np.empty((n_act, n_pos) if use_gram else (1, 1), u.dtype)
    for i in range(n_pos):
        if not valid[i]:
            continue
        s = slot[i]
        n_fired = 0
        for a in range(n_act):
            j = act[a]
            if use_gram or not moved[j]:
                scaled = u[j, i]
            else:
                acc = 0.0
                for k in range(dim):
                    acc += weight[j, k] * x[i, k]
                scaled = acc * scale[i]
            if scaled >= level[j, s]:
                fired[n_fired] = j
                fired_u[n_fired] = scaled
                n_fired += 1
        if n_fired == 0:
            continue
        for f in range(n_fired):
            out[fired[f], i] = fired_u[f] / scale[i]
        n_learn = 0
        if 0 < k_winners < n_fired:
            for f in range(n_fired):
                chosen[f] = False
            for _ in range(k_winners):
                best = -1
                for f in range(n_fired):
                    if not chosen[f] and (best < 0 or fired_u[f] > fired_u[best]):
                        best = f
                chosen[best] = True
            for f in range(n_fired):
                if chosen[f]:
                    learners[n_learn] = fired[f]
                    learner_u[n_learn] = fired_u[f]
                    n_learn += 1
        else:
            for f in range(n_fired):
                learners[f] = fired[f]
                learner_u[f] = fired_u[f]
            n_learn = n_fired
        for l in range(n_learn):
            j = learners[l]
            y = learner_u[l] / scale[i]
            if oja:
                c = 1.0 - w_boost * y * y
                d = w_boost * y
            else:
                c = 1.0 - w_boost
                d = w_boost
            for k in range(dim):
                new_w[l, k] = c * weight[j, k] + d * x[i, k]
            if use_gram:
                for p in range(i + 1, n_pos):
                    new_u[l, p] = c * u[j, p] + d * gram[i, p]
            if repulsion > 0:
                for m in range(n_neurons):
                    if m == j:
                        continue
                    acc = _dot(weight[j], weight[m])
                    if acc > repulsion_cosine * wnorm[j] * wnorm[m]:
                        dist = 0.0
                        for k in range(dim):
                            dist += (weight[j, k] - weight[m, k]) ** 2
                        if dist == 0.0:
                            continue  # an exact twin gives no direction to move away in
                        push = repulsion / math.sqrt(dist)
                        for k in range(dim):
                            new_w[l, k] += push * (weight[j, k] - weight[m, k])
                        if use_gram:
                            for p in range(i + 1, n_pos):
                                new_u[l, p] += push * (u[j, p] - u[m, p])
            if not oja:
                acc = 0.0
                for k in range(dim):
                    acc += new_w[l, k] * new_w[l, k]
                norm = math.sqrt(acc)
                for k in range(dim):
                    new_w[l, k] /= norm
                if use_gram:
                    for p in range(i + 1, n_pos):
                        new_u[l, p] /= norm
        for l in range(n_learn):
            j = learners[l]
            acc = 0.0
            for k in range(dim):
                weight[j, k] = new_w[l, k]
                acc += new_w[l, k] * new_w[l, k]
            wnorm[j] = math.sqrt(acc)
            level[j, s] = learner_u[l]
            won[j, i] = True
            moved[j] = True
            if use_gram:
                for p in range(i + 1, n_pos):
                    u[j, p] = new_u[l, p]


def as_array(t):
    """A contiguous numpy view of a CPU tensor (copy only when not contiguous)."""
    return np.ascontiguousarray(t.numpy())
