"""Compiled kernels for the Frontprop rule on CPU (numba).

Neurons never interact under the plain rule, so each neuron can walk a chunk of positions on its
own: the per-neuron kernels spread their neurons over threads (``numba.prange``), as many as torch
uses (``match_threads``). A neuron's arithmetic is the same on any thread, so results are bit for
bit the same for any thread count. The kernels work in place on the layer's full arrays (no
gathered copies), write fired values straight into the (positions, neurons) output, and finish
each moved neuron's weights themselves.

The sequential scans take scaled projections ``u = (w . x) * r**-e`` and scaled threshold levels
(see ``fpwb.layers.engine``), and do no work for a neuron that does not fire. They differ in how a
neuron's later projections follow its weight change:

- ``scan_gram`` (wide inputs, few positions): after a firing at i with value y, the new weight is
  (a w + b x_i) / n with a = 1 - w_boost, b = w_boost and n = sqrt(a^2 + b^2 + 2 a b y) (unit w and
  x), so every later projection updates from the chunk's Gram matrix in O(positions), and the
  final weight is a linear combination of the start weight and the inputs it fired on, summed
  over those inputs only (a neuron fires on a few positions of a chunk).
- ``scan_direct`` (narrow inputs such as conv patches): the weight is updated in place exactly as
  in the per-sample rule and later projections are recomputed as dot products, O(inputs) each.

``batch_walk`` and ``batch_move`` are the batch rule's firing decisions and weight update, and
``scan_positions`` the position-major walk for the switches under which neurons interact.
"""
import math

import numba
import numpy as np
import torch


def match_threads():
    """Let the parallel kernels use as many threads as torch does (``torch.set_num_threads``,
    ``OMP_NUM_THREADS``), so that a one-thread measurement stays one thread."""
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


@numba.njit(cache=True, fastmath=True)
def _dot(a, b):
    """a . b with reassociation allowed (SIMD; a strict left-to-right sum waits on every add)."""
    acc = 0.0
    for k in range(a.shape[0]):
        acc += a[k] * b[k]
    return acc


@numba.njit(cache=True, parallel=True)
def scan_gram(u, gram, inv_scale, valid, slot, neurons, x, weight, level, w_boost, out, oja=False):
    """Scan the given neurons with the Gram matrix, in place on the full arrays.

    u (N, P) scaled projections (the rows of ``neurons`` are consumed), gram (P, P) scaled
    ``x_i . x_k * r**-e_k``, x (P, K) unit rows; in place: weight (N, K), level (N, S) and
    out (P, N) fired values. A neuron's final weight is ``keep * w + sum_f coef_f * x_f`` over
    the positions f where it fired, renormalised (not under Oja's rule, whose update
    ``w + w_boost y (x - y w)`` is of the same form with c = 1 - w_boost y^2, d = w_boost y).
    """
    a = 1.0 - w_boost
    n_pos = u.shape[1]
    dim = x.shape[1]
    for a_ in numba.prange(neurons.shape[0]):
        j = neurons[a_]
        fired_at = np.empty(n_pos, np.int64)
        coef = np.empty(n_pos, x.dtype)  # the inputs' dtype keeps the weight sums below vectorised
        proj, lev = u[j], level[j]  # (P,), (S,)
        keep = 1.0  # coefficient of the start weight so far
        n_fired = 0
        for i in range(n_pos):
            if not valid[i] or proj[i] < lev[slot[i]]:
                continue
            y = proj[i] * inv_scale[i]
            out[i, j] = y
            lev[slot[i]] = proj[i]
            if oja:
                c = 1.0 - w_boost * y * y
                d = w_boost * y
            else:
                norm = math.sqrt(a * a + w_boost * w_boost + 2.0 * a * w_boost * y)
                c = a / norm
                d = w_boost / norm
            cu, du = u.dtype.type(c), u.dtype.type(d)  # one dtype: the update vectorises
            gram_row = gram[i]
            for k in range(i + 1, n_pos):
                proj[k] = cu * proj[k] + du * gram_row[k]
            keep *= c
            for f in range(n_fired):  # earlier inputs shrink with the weight they joined
                coef[f] *= c
            fired_at[n_fired] = i
            coef[n_fired] = d
            n_fired += 1
        if n_fired == 0:
            continue
        w = weight[j]
        keep_w = weight.dtype.type(keep)
        for k in range(dim):
            w[k] *= keep_w
        for f in range(n_fired):
            inputs = x[fired_at[f]]
            for k in range(dim):
                w[k] += coef[f] * inputs[k]
        if not oja:
            _normalise(w)


@numba.njit(cache=True)
def _normalise(w):
    """Scale the vector w to unit length, in place."""
    norm = math.sqrt(_dot(w, w))
    for k in range(w.shape[0]):
        w[k] /= norm

@numba.njit(cache=True, parallel=True)
def scan_direct(u, x, scale, valid, slot, neurons, weight, level, out, w_boost, oja=False):
    """Scan the given neurons with dot products, in place on the full arrays.

    u (N, P) scaled projections with the start weights, x (P, K) unit rows; in place: weight
    (N, K), level (N, S), out (P, N) fired values. ``oja``: Oja's update, no renormalisation.
    """
    n_pos = u.shape[1]
    dim = x.shape[1]
    for a_ in numba.prange(neurons.shape[0]):
        j = neurons[a_]
        moved = False
        for i in range(n_pos):
            if not valid[i]:
                continue
            if moved:
                y = _dot(weight[j], x[i])
                scaled = y * scale[i]
            else:
                scaled = u[j, i]
                y = scaled / scale[i]
            if scaled < level[j, slot[i]]:
                continue
            out[i, j] = y
            level[j, slot[i]] = scaled
            if oja:
                for k in range(dim):
                    weight[j, k] += w_boost * y * (x[i, k] - y * weight[j, k])
            else:
                for k in range(dim):
                    weight[j, k] += w_boost * (x[i, k] - weight[j, k])
                _normalise(weight[j])
            moved = True


@numba.njit(cache=True)
def _choose_winners(fired_u, n_fired, k_winners, chosen):
    """chosen[:n_fired] = which of the first n_fired entries of fired_u are among the k_winners
    largest (all when k_winners is 0 or at least n_fired); ties go to the earlier entry."""
    every = k_winners == 0 or n_fired <= k_winners
    for f in range(n_fired):
        chosen[f] = every
    if not every:
        for _ in range(k_winners):
            best = -1
            for f in range(n_fired):
                if not chosen[f] and (best < 0 or fired_u[f] > fired_u[best]):
                    best = f
            chosen[best] = True


@numba.njit(cache=True)
def batch_walk(values, scale, valid, slot, level, k_winners, k_output, out, learned):
    """Firing decisions of one batch chunk (see ``fpwb.layers.engine.batch_chunk``): every position sees
    the chunk-start weights, thresholds follow the stream as in sequential mode.

    values (P, N) projections with the chunk-start weights, scale (P,) the decay scale of each
    position's step; in place: level (N, S) scaled levels (chunk-start thresholds in, levels at
    the chunk end before its decay out), out (P, N) fired values (zeros in; with ``k_output``
    the winners' only) and learned (P, N) where a neuron learned: it fired and, with
    ``k_winners`` > 0, was among the k most excited (ties go to the lower index).
    """
    n_pos, n_neurons = values.shape
    fired = np.empty(n_neurons, np.int64)
    fired_u = np.empty(n_neurons)
    chosen = np.zeros(n_neurons, np.bool_)
    for i in range(n_pos):
        if not valid[i]:
            continue
        s = slot[i]
        n_fired = 0
        for j in range(n_neurons):
            scaled = values[i, j] * scale[i]
            if scaled >= level[j, s]:
                fired[n_fired] = j
                fired_u[n_fired] = scaled
                n_fired += 1
        _choose_winners(fired_u, n_fired, k_winners, chosen)
        for f in range(n_fired):
            j = fired[f]
            if chosen[f]:
                learned[i, j] = True
                level[j, s] = fired_u[f]
            if chosen[f] or not k_output:
                out[i, j] = values[i, j]


@numba.njit(cache=True, parallel=True)
def batch_move(learned, x, weight, w_boost):
    """The batch rule's weight update, in place: each neuron that learned at k positions moves
    once, ``normalise((1 - step) w + (step / k) * sum of those inputs)`` with
    step = 1 - (1 - w_boost)**k. learned (P, N) bool, x (P, K) unit rows, weight (N, K).
    Works on the learned entries only (a neuron learns at a few positions of a chunk), one
    neuron at a time so that its weights stay in cache while its inputs are added."""
    n_pos, n_neurons = learned.shape
    start = np.zeros(n_neurons + 1, np.int64)  # positions of neuron j: at[start[j]:start[j + 1]]
    for i in range(n_pos):
        for j in range(n_neurons):
            start[j + 1] += learned[i, j]
    for j in range(n_neurons):
        start[j + 1] += start[j]
    at = np.empty(start[n_neurons], np.int64)
    filled = start[:-1].copy()
    for i in range(n_pos):
        for j in range(n_neurons):
            if learned[i, j]:
                at[filled[j]] = i
                filled[j] += 1
    for j in numba.prange(n_neurons):
        k = start[j + 1] - start[j]
        if k == 0:
            continue
        step = 1.0 - (1.0 - w_boost) ** k
        keep = weight.dtype.type(1.0 - step)
        share = weight.dtype.type(step / k)  # the weight of each of the neuron's inputs
        w = weight[j]
        for d in range(w.shape[0]):
            w[d] *= keep
        for f in range(start[j], start[j + 1]):
            row = x[at[f]]
            for d in range(w.shape[0]):
                w[d] += share * row[d]
        _normalise(w)


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
        _choose_winners(fired_u, n_fired, k_winners, chosen)
        n_learn = 0
        for f in range(n_fired):
            if chosen[f]:
                learners[n_learn] = fired[f]
                learner_u[n_learn] = fired_u[f]
                n_learn += 1
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


@numba.njit(cache=True)
def count_fired(out, counts):
    """counts (N,) += the number of positive entries in each column of out (P, N): one pass,
    no (P, N) temporaries."""
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            if out[i, j] > 0:
                counts[j] += 1


def as_array(t):
    """A contiguous numpy view of a CPU tensor (copy only when not contiguous)."""
    return np.ascontiguousarray(t.numpy())
