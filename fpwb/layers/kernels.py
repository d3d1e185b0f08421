"""Compiled CPU kernels (numba) for the rules whose update has the linear form of ``fpwb.rules``.

The kernels know no rule: a learner's move ``w' = c * w + d * x`` takes ``(c, d)`` from the rule's
compiled ``update`` (a C callback, so one compiled kernel serves every rule and stays cached), and
a batch chunk's combined move from its ``batch_update``. Arguments come in groups (numba tuples):

- ``stream = (x, valid, slot, step)``: x (P, K) unit rows, valid (P,) bool, slot (P,) the slot of
  each position, step (P,) float64 the global sample index of each position;
- ``state = (weight, level, count)``: weight (N, K), level (N, S) scaled threshold levels, count
  (N,) int64 learnings per neuron, all updated in place;
- ``rule = (update, params, renormalise, w_boost, constant)``; ``constant``: the update ignores
  y, count and step (the plain rule), so the kernels call it once instead of at every firing.

Under a rule whose neurons never interact each neuron walks a chunk on its own: the per-neuron
kernels spread neurons over threads (``numba.prange``), as many as torch uses (``match_threads``),
with the same bits on any thread count. They work in place on the layer's full arrays, write
fired values straight into the (positions, neurons) output, and do no work for a neuron that
does not fire. Scaled projections ``u = (w . x) * r**-e`` and levels: see ``fpwb.layers.engine``.

- ``scan_gram`` (wide inputs, few positions): after a firing at i the new weight is
  ``(c w + d x_i) / n`` (n = |c w + d x_i| = sqrt(c^2 + d^2 + 2 c d y) for unit w and x when the rule
  renormalises, else 1), so every later projection follows from the chunk's Gram matrix in
  O(positions), and the final weight is a combination of the start weight and the inputs the
  neuron fired on.
- ``scan_direct`` (narrow inputs such as conv patches): the weight moves in place as in the
  per-position rule and later projections are recomputed as dot products, O(inputs) each.
- ``scan_positions``: position by position, for the switches under which neurons interact
  (k-winners-take-all, repulsion).
- ``batch_walk`` (firing decisions of a batch chunk), ``learned_lists`` (where each neuron learned),
  ``batch_move`` (the sparse combined move), ``batch_move_patches`` (the same, reading a
  convolution's patches from its images) and ``batch_coefficients`` (the move as dense
  coefficients, for the tensor path).
- ``single_step``: one sample, the whole state change in one call (FpLinear's one-sample calls);
  ``single_step_threaded`` the same with the rows split over threads.
- ``batch_conv`` and ``scan_conv``: a convolution's chunk in batch and sequential mode (rules whose
  neurons never interact), each one call in the convolution's (steps, kernels, locations)
  layout, reading patches from channels-last images or written-out rows. Their inner loops
  index with unsigned integers (``_add_patch``, ``_patch_dot``, ...): numba's wrap-around of
  negative indices keeps a loop with signed indices from vectorising.
"""
import math
import os
import warnings

import numba
import numpy as np
import torch

# The rule's update reaches the kernels as a C callback (numba's first-class functions).
warnings.filterwarnings("ignore", message="First-class function type feature is experimental",
                        category=numba.NumbaExperimentalFeatureWarning)


#: Rows whose largest magnitude lies outside [2**-SAFE_EXPONENT, 2**SAFE_EXPONENT] are first scaled
#: by a power of two (exact), so that squaring them neither overflows nor underflows.
SAFE_EXPONENT = 60


def threads() -> int:
    """How many threads the parallel kernels use now."""
    return numba.get_num_threads()


def threads_for_short_calls() -> int:
    """Threads for a parallel kernel called many times in a row on little work (FpLinear's
    one-sample calls): ``threads()`` while OpenMP's idle threads spin between calls (its default),
    one under ``OMP_WAIT_POLICY=PASSIVE``, where they sleep and waking them at every call costs more
    than splitting the work saves."""
    return 1 if os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE" else threads()


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


@numba.njit(cache=True)
def _normalise(w):
    """Scale the vector w to unit length, in place."""
    norm = math.sqrt(_dot(w, w))
    for k in range(w.shape[0]):
        w[k] /= norm


@numba.njit(cache=True, parallel=True)
def scan_gram(u, gram, inv_scale, stream, neurons, state, rule, out):
    """Scan the given neurons with the Gram matrix, in place on the full arrays.

    u (N, P) scaled projections (the rows of ``neurons`` are consumed), gram (P, P) scaled
    ``x_i . x_k * r**-e_k``, inv_scale (P,) ``r**e``; out (P, N) fired values. A neuron's final
    weight is ``keep * w + sum_f coef_f * x_f`` over the positions f where it fired.
    """
    x, valid, slot, step = stream
    weight, level, count = state
    update, params, renormalise, w_boost, constant = rule
    c0, d0 = update(0.0, w_boost, 0.0, 0.0, params)  # the move itself when the rule's is constant
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
            c, d = (c0, d0) if constant else update(y, w_boost, float(count[j]), step[i], params)
            count[j] += 1
            if renormalise:
                norm = math.sqrt(c * c + d * d + 2.0 * c * d * y)
                c /= norm
                d /= norm
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
        if renormalise:
            _normalise(w)


@numba.njit(cache=True, parallel=True)
def scan_direct(u, scale, stream, neurons, state, rule, out):
    """Scan the given neurons with dot products, in place on the full arrays.

    u (N, P) scaled projections with the start weights, scale (P,) ``r**-e``; out (P, N) fired
    values.
    """
    x, valid, slot, step = stream
    weight, level, count = state
    update, params, renormalise, w_boost, constant = rule
    c0, d0 = update(0.0, w_boost, 0.0, 0.0, params)  # the move itself when the rule's is constant
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
            c, d = (c0, d0) if constant else update(y, w_boost, float(count[j]), step[i], params)
            count[j] += 1
            cw, dw = weight.dtype.type(c), weight.dtype.type(d)
            for k in range(dim):
                weight[j, k] = cw * weight[j, k] + dw * x[i, k]
            if renormalise:
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


@numba.njit(cache=True, parallel=True)
def batch_walk(values, scale, valid, n_slots, level, k_winners, k_output, out, learned, blocks):
    """Firing decisions of one batch chunk (see ``fpwb.layers.engine.batch_chunk``): every position
    sees the chunk-start weights, thresholds follow the stream as in sequential mode.

    values (P, N) projections with the chunk-start weights, position p = e * n_slots + s; scale
    (E,) the decay scale of each step; in place: level (N, S) scaled levels (chunk-start
    thresholds in, levels at the chunk end before its decay out), out (P, N) fired values, 0
    elsewhere, every entry written (with ``k_output`` the winners' only) and learned (P, N)
    where a neuron learned (False elsewhere): it fired and, with ``k_winners`` > 0, was among the
    k most excited (ties go to the lower index). A slot's levels depend only on its own
    positions, so the slots walk in parallel (each in stream order); with fewer slots than
    ``blocks`` (FpLinear has one) and no k_winners, where each neuron's levels depend only on its
    own values, ``blocks`` blocks of neurons walk in parallel instead.
    """
    n_pos, n_neurons = values.shape
    if k_winners == 0 and n_slots < blocks:
        blocks = max(1, min(n_neurons, blocks))
        size = (n_neurons + blocks - 1) // blocks
        for b in numba.prange(blocks):
            first, last = b * size, min(n_neurons, (b + 1) * size)
            for i in range(n_pos):
                s, step_scale = i % n_slots, scale[i // n_slots]
                for j in range(first, last):
                    fires = valid[i] and values[i, j] * step_scale >= level[j, s]
                    learned[i, j] = fires
                    out[i, j] = values[i, j] if fires else 0
                    if fires:
                        level[j, s] = values[i, j] * step_scale
        return
    for s in numba.prange(n_slots):
        fired = np.empty(n_neurons, np.int64)
        fired_u = np.empty(n_neurons)
        chosen = np.zeros(n_neurons, np.bool_)
        for i in range(s, n_pos, n_slots):
            for j in range(n_neurons):
                out[i, j] = 0
                learned[i, j] = False
            if not valid[i]:
                continue
            step_scale = scale[i // n_slots]
            n_fired = 0
            for j in range(n_neurons):
                scaled = values[i, j] * step_scale
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
def learned_lists(learned, blocks):
    """Where each neuron learned, as flat lists (start, at): positions at[start[j]:start[j + 1]]
    of neuron j, in stream order. learned (P, N) bool. Neurons are split into ``blocks`` blocks
    (the thread count: each thread reads its block's columns of every row)."""
    n_pos, n_neurons = learned.shape
    blocks = max(1, min(n_neurons, blocks))
    size = (n_neurons + blocks - 1) // blocks
    start = np.zeros(n_neurons + 1, np.int64)
    for b in numba.prange(blocks):
        for i in range(n_pos):
            for j in range(b * size, min(n_neurons, (b + 1) * size)):
                start[j + 1] += learned[i, j]
    for j in range(n_neurons):
        start[j + 1] += start[j]
    at = np.empty(start[n_neurons], np.int64)
    for b in numba.prange(blocks):
        filled = start[:-1].copy()
        for i in range(n_pos):
            for j in range(b * size, min(n_neurons, (b + 1) * size)):
                if learned[i, j]:
                    at[filled[j]] = i
                    filled[j] += 1
    return start, at


@numba.njit(cache=True)
def _combined(values, j, at, first, last, count, step0, rule, ys, d):
    """The rule's combined move for neuron j over its learned positions at[first:last]: fills
    d[first:last] (scratch ys[first:last] holds their values) and returns the coefficient of the
    start weight. Slices of shared flat arrays: no allocation per neuron."""
    update_batch, params, _, w_boost, _ = rule
    for f in range(first, last):
        ys[f] = values[at[f], j]
    return update_batch(ys[first:last], last - first, w_boost, float(count[j]), step0, params, d[first:last])


@numba.njit(cache=True)
def _start_move(values, j, lists, count, step0, rule, ys, d, w) -> int:
    """The shared start of a batch move of neuron j: the rule's combined move over its learned
    positions (``_combined``: fills d), w scaled by the start weight's coefficient. Returns how
    many positions it learned at (0: nothing to do)."""
    start, at = lists
    n = start[j + 1] - start[j]
    if n > 0:
        keep = w.dtype.type(_combined(values, j, at, start[j], start[j + 1], count, step0, rule, ys, d))
        for k in range(w.shape[0]):
            w[k] *= keep
    return n


@numba.njit(cache=True, parallel=True)
def batch_move(lists, values, x, weight, count, step0, rule):
    """The batch rule's weight update, in place on weight (N, K) and count (N,): each neuron that
    learned at n positions moves once, ``w' = c * w + sum_i d[i] * x_i`` with (c, d) from the
    rule's ``batch_update`` (``rule`` holds it in place of ``update``), renormalised when the rule
    does. lists: where each neuron learned (``learned_lists``); values (P, N), x (P, K). Works on
    the learned entries only, one neuron at a time so that its weights stay in cache while its
    inputs are added."""
    start, at = lists
    ys, d = np.empty(at.shape[0]), np.empty(at.shape[0])
    for j in numba.prange(values.shape[1]):
        w = weight[j]
        n = _start_move(values, j, lists, count, step0, rule, ys, d, w)
        if n == 0:
            continue
        for f in range(start[j], start[j + 1]):
            row = x[at[f]]
            share = weight.dtype.type(d[f])
            for k in range(w.shape[0]):
                w[k] += share * row[k]
        if rule[2]:  # renormalise
            _normalise(w)
        count[j] += n


@numba.njit(cache=True, parallel=True)
def batch_move_patches(lists, values, patches, weight, count, step0, rule):
    """``batch_move`` for a convolution whose patches are not written out (``fpwb.layers.patches``):
    each input row is read from the padded images. patches = (images (E, C, Hp, Wp), inverse
    norms (E, S), geometry (W_out, kH, kW, sH, sW)); position p = e * S + s is the patch at output
    row s // W_out, column s % W_out of image e, times its inverse norm."""
    images, inverse, geometry = patches
    out_width, kh, kw, sh, sw = geometry[0], geometry[1], geometry[2], geometry[3], geometry[4]
    n_slots, channels = inverse.shape[1], images.shape[1]
    start, at = lists
    ys, d = np.empty(at.shape[0]), np.empty(at.shape[0])
    for j in numba.prange(values.shape[1]):
        w = weight[j]
        n = _start_move(values, j, lists, count, step0, rule, ys, d, w)
        if n == 0:
            continue
        for f in range(start[j], start[j + 1]):
            e, s = at[f] // n_slots, at[f] % n_slots
            top, left = (s // out_width) * sh, (s % out_width) * sw
            share = weight.dtype.type(d[f] * inverse[e, s])
            k = 0
            for c in range(channels):
                for a in range(kh):
                    line = images[e, c, top + a]
                    for b in range(kw):
                        w[k] += share * line[left + b]
                        k += 1
        if rule[2]:  # renormalise
            _normalise(w)
        count[j] += n


@numba.njit(cache=True, fastmath=True)
def _add_patch(weight, j, share, images, e, top, left, kh, width):
    """weight[j] += share * the patch whose rows start at images[e, top:top + kh, left] (kh rows of
    ``width`` values, channels-last). Unsigned indices: numba's negative-index wrap-around would
    keep the loop from vectorising."""
    j, e, top, left, width = np.uint64(j), np.uint64(e), np.uint64(top), np.uint64(left), np.uint64(width)
    for a in range(np.uint64(kh)):
        for q in range(width):
            weight[j, a * width + q] += share * images[e, top + a, left + q]


@numba.njit(cache=True, fastmath=True)
def _add_four_patches(weight, j, shares, tops, lefts, images, e, kh, width):
    """weight[j] += shares[i] * the patch at (tops[i], lefts[i]) of images[e], i = 0..3 in order
    (4-tuples): the sums of four ``_add_patch`` calls in one pass over weight[j]."""
    j, e, width = np.uint64(j), np.uint64(e), np.uint64(width)
    t0, t1, t2, t3 = np.uint64(tops[0]), np.uint64(tops[1]), np.uint64(tops[2]), np.uint64(tops[3])
    l0, l1, l2, l3 = np.uint64(lefts[0]), np.uint64(lefts[1]), np.uint64(lefts[2]), np.uint64(lefts[3])
    for a in range(np.uint64(kh)):
        for q in range(width):
            value = weight[j, a * width + q]
            value += shares[0] * images[e, t0 + a, l0 + q]
            value += shares[1] * images[e, t1 + a, l1 + q]
            value += shares[2] * images[e, t2 + a, l2 + q]
            value += shares[3] * images[e, t3 + a, l3 + q]
            weight[j, a * width + q] = value


@numba.njit(cache=True, fastmath=True)
def _add_patches(weight, j, shares, at, images, e, tops, lefts, kh, width):
    """weight[j] += shares[i] * the patch at location at[i] of images[e] (channels-last; tops, lefts
    from ``_patch_starts``), i in order: the same sums as one ``_add_patch`` after another, with
    weight[j] loaded and stored once per four patches instead of once per patch."""
    i, n = 0, at.shape[0]
    while i + 4 <= n:
        s0, s1, s2, s3 = at[i], at[i + 1], at[i + 2], at[i + 3]
        _add_four_patches(weight, j, (shares[i], shares[i + 1], shares[i + 2], shares[i + 3]),
                          (tops[s0], tops[s1], tops[s2], tops[s3]), (lefts[s0], lefts[s1], lefts[s2], lefts[s3]),
                          images, e, kh, width)
        i += 4
    for i in range(i, n):
        _add_patch(weight, j, shares[i], images, e, tops[at[i]], lefts[at[i]], kh, width)


@numba.njit(cache=True, fastmath=True)
def _add_rows(weight, j, shares, rows, first, at):
    """weight[j] += shares[i] * rows[first + at[i]], i in order: the sums of one ``_add_row`` after
    another, four rows per pass over weight[j]."""
    j, first = np.uint64(j), np.uint64(first)
    i, n = 0, at.shape[0]
    while i + 4 <= n:
        p0, p1, p2, p3 = first + np.uint64(at[i]), first + np.uint64(at[i + 1]), first + np.uint64(at[i + 2]), \
            first + np.uint64(at[i + 3])
        a0, a1, a2, a3 = shares[i], shares[i + 1], shares[i + 2], shares[i + 3]
        for k in range(np.uint64(weight.shape[1])):
            value = weight[j, k]
            value += a0 * rows[p0, k]
            value += a1 * rows[p1, k]
            value += a2 * rows[p2, k]
            value += a3 * rows[p3, k]
            weight[j, k] = value
        i += 4
    for i in range(i, n):
        _add_row(weight, j, shares[i], rows, first + np.uint64(at[i]))


@numba.njit(cache=True, fastmath=True)
def _scale_row(weight, j, factor):
    """weight[j] *= factor (unsigned indices, as in ``_add_patch``)."""
    j = np.uint64(j)
    for k in range(np.uint64(weight.shape[1])):
        weight[j, k] *= factor


@numba.njit(cache=True, fastmath=True)
def _renormalise_row(weight, j):
    """weight[j] scaled to unit length (squares summed in float64, ``_rows_dot64``)."""
    norm = weight.dtype.type(math.sqrt(_rows_dot64(weight, j, weight, j)))
    j = np.uint64(j)
    for k in range(np.uint64(weight.shape[1])):
        weight[j, k] /= norm


@numba.njit(cache=True, fastmath=True)
def _add_row(weight, j, share, rows, p):
    """weight[j] += share * rows[p] (unsigned indices, as in ``_add_patch``)."""
    j, p = np.uint64(j), np.uint64(p)
    for k in range(np.uint64(weight.shape[1])):
        weight[j, k] += share * rows[p, k]


@numba.njit(cache=True, fastmath=True)
def _rows_dot64(a, i, b, j) -> float:
    """a[i] . b[j] in float64 (each product exact for float32), summed reassociated (SIMD): what
    ``scan_conv``'s reach bound needs, without a strict left-to-right sum's wait on every add."""
    i, j = np.uint64(i), np.uint64(j)
    acc = 0.0
    for k in range(np.uint64(a.shape[1])):
        acc += float(a[i, k]) * float(b[j, k])
    return acc


#: Room for rounding in ``scan_conv``'s reach bound: per move since the exact alignment (each move
#: rounds the weights, about 1e-7 in float32), in the lengths of unit kernels and patches, in a
#: chunk-start projection (the convolution's sum), and in all.
DRIFT_SLACK_PER_MOVE = 1e-6
UNIT_SLACK = 1e-5
Y0_SLACK = 1e-4
DRIFT_MARGIN = 1e-4

#: Below this |c * sigma| a move in ``scan_conv`` writes the kernel out instead of dividing by it (a
#: rule that jumps to the input, c = 0; or a kernel shrunk far within one step).
LAZY_SCALE_FLOOR = 1e-20


@numba.njit(cache=True)
def _reach(align, moves):
    """For a unit kernel w with w . w_start = align (both unit) after ``moves`` moves: an upper
    bound on |r|^2, r = w - align * w_start (the part of w orthogonal to w_start), and the slack
    its projections need, both with room for rounding (``_out_of_reach``)."""
    slack = 2.0 * moves * DRIFT_SLACK_PER_MOVE
    return max(0.0, 1.0 - align * align + slack + 2.0 * UNIT_SLACK), slack + Y0_SLACK + DRIFT_MARGIN


@numba.njit(cache=True)
def _out_of_reach(y0, align, reach, slack, step_scale, level) -> bool:
    """Whether a unit kernel w (``_reach``: align, reach, slack) cannot fire on a unit patch x whose
    projection on w_start is y0: with w = align * w_start + r and x = y0 * w_start + x', both r and
    x' orthogonal to w_start, y = align * y0 + r . x' <= align * y0 + |r| |x'| (the angle from w to
    x is at least the angle from w_start to x less the angle from w_start to w), so w cannot fire
    where that bound times step_scale stays below level. Compared squared: no square root."""
    room = level - (align * y0 + slack) * step_scale
    across = max(0.0, 1.0 - y0 * y0 + 2.0 * Y0_SLACK * abs(y0) + 2.0 * UNIT_SLACK)  # >= |x'|^2
    return room > 0 and reach * across * step_scale * step_scale < room * room


@numba.njit(cache=True)
def _patch_starts(n_slots, geometry):
    """The first row and the first value in that row (channels-last) of each location's patch,
    (S,) each: computed once, not with two integer divisions at every use."""
    out_width, sh, sw, channels = geometry[0], geometry[3], geometry[4], geometry[5]
    tops, lefts = np.empty(n_slots, np.int64), np.empty(n_slots, np.int64)
    for s in range(n_slots):
        tops[s] = (s // max(1, out_width)) * sh
        lefts[s] = (s % max(1, out_width)) * sw * channels
    return tops, lefts


@numba.njit(cache=True, parallel=True, fastmath=True)
def batch_conv(raw, denominator, valid, scale, level, out, source, weight, count, fire_count, step0, rule,
               coef, blocks):
    """One batch chunk of a convolution under a rule whose neurons never interact (no k_winners),
    in the convolution's layout: the firing decisions, each kernel's combined move and the counts.

    raw (E, N, S) the projections with the chunk-start kernels before each patch is scaled (as
    ``F.conv2d`` writes them); denominator (E, S) the patch lengths (y = raw / denominator); valid
    (E, S); scale (E,) each step's decay scale. In place: level (N, S) scaled levels (as in
    ``batch_walk``), out (E, N, S) fired values, 0 elsewhere, every entry written; count (N,)
    learnings and fire_count (N,) non-zero firings. The patches: source = (rows (E * S, K), the
    unit patches written out in weight's order) or (rows empty) (images (E, Hp, Wp * C)
    channels-last, geometry (W_out, kH, kW, sH, sW, C)) with weight (N, K) in (kH, kW, C) order.
    Each learner gets the rule's ``batch_update`` over its values in stream order and moves once,
    ``w' = c * w + sum_i d[i] * x_i``, renormalised when the rule does. With coef (E, N, S) given
    (not empty; it may be raw, no longer needed), weight is only scaled by c and coef receives
    d[i] / denominator where the kernel learned, 0 elsewhere: the caller adds the patches as one
    weight-gradient convolution and renormalises.

    A kernel's firings depend on its own levels alone, so each kernel walks the whole chunk on its
    own (kernels in ``blocks`` interleaved blocks, one per thread: the same bits on any thread
    count), steps in order and, inside a step, locations in order, recording its learnings in
    stream order with their shares of the move. Then each thread adds the learned patches step by
    step, all its kernels' patches of a step before the next step's (so that the step's images
    stay in cache while its kernels read them, instead of every kernel streaming the whole
    chunk), four per pass over a kernel's weights (``_add_patches``, ``_add_rows``): each kernel
    still gets its patches in stream order, the bits of one add after another.
    """
    rows, images, geometry = source
    update_batch, params, renormalise, w_boost, _ = rule
    E, N, S = raw.shape
    kh, width = geometry[1], geometry[2] * geometry[5]  # a patch: kH rows of kW * C values
    tops, lefts = _patch_starts(S, geometry)
    dense = coef.shape[0] > 0
    from_rows = rows.shape[0] > 0
    blocks = max(1, min(N, blocks))
    where = np.empty((N, E * S), np.int32)  # each kernel's learnings: locations, in stream order
    shares = np.empty((N, E * S), weight.dtype)  # and their patches' shares of its move
    ends = np.zeros((N, E + 1), np.int64)  # kernel j's learnings of step e: ends[j, e]:ends[j, e + 1]
    for b in numba.prange(blocks):
        ys, d = np.empty(E * S), np.empty(E * S)  # a kernel's learned values and the rule's d for them
        fired = np.empty(S, np.bool_)  # where the kernel fired in the step at hand
        for j in range(b, N, blocks):
            v = np.uint64(j)  # unsigned indices: no negative-index wrap-around, the loop vectorises
            n = 0
            for e in range(E):
                step_scale = scale[e]
                u = np.uint64(e)
                for s in range(np.uint64(S)):
                    y = raw[u, v, s] / denominator[u, s]
                    scaled = y * step_scale
                    fires = valid[u, s] & (scaled >= level[v, s])
                    level[v, s] = scaled if fires else level[v, s]
                    out[u, v, s] = y if fires else 0
                    fired[s] = fires
                for s in range(S):  # then the step's learnings, appended without a branch
                    where[v, n] = s
                    ys[n] = out[u, v, np.uint64(s)]
                    n += fired[s]
                ends[j, e + 1] = n
            if dense:  # raw[:, j] is read: coef[:, j] may take its place
                for e in range(E):
                    for s in range(S):
                        coef[e, j, s] = 0
            if n == 0:
                continue
            keep = weight.dtype.type(update_batch(ys[:n], n, w_boost, float(count[j]), step0, params, d[:n]))
            _scale_row(weight, j, keep)
            count[j] += n
            for f in range(n):
                fire_count[j] += ys[f] != 0
            for e in range(E):
                for f in range(ends[j, e], ends[j, e + 1]):
                    s = where[j, f]
                    if dense:
                        coef[e, j, s] = d[f] / denominator[e, s]
                    else:
                        shares[j, f] = d[f] if from_rows else d[f] / denominator[e, s]
        if dense:
            continue
        for e in range(E):
            for j in range(b, N, blocks):
                first, last = ends[j, e], ends[j, e + 1]
                if first == last:
                    continue
                if from_rows:
                    _add_rows(weight, j, shares[j, first:last], rows, e * S, where[j, first:last])
                else:
                    _add_patches(weight, j, shares[j, first:last], where[j, first:last], images, e, tops, lefts,
                                 kh, width)
        if renormalise:
            for j in range(b, N, blocks):
                if ends[j, E] > 0:
                    _renormalise_row(weight, j)


@numba.njit(cache=True, fastmath=True)
def _patch_dot(weight, j, images, e, top, left, kh, width):
    """weight[j] . the patch whose rows start at images[e, top:top + kh, left] (channels-last;
    unsigned indices as in ``_add_patch``), accumulated in the weights' dtype (full SIMD width)."""
    j, e, top, left, width = np.uint64(j), np.uint64(e), np.uint64(top), np.uint64(left), np.uint64(width)
    acc = weight.dtype.type(0)
    for a in range(np.uint64(kh)):
        for q in range(width):
            acc += weight[j, a * width + q] * images[e, top + a, left + q]
    return acc


@numba.njit(cache=True, fastmath=True)
def _row_dot(weight, j, rows, p):
    """weight[j] . rows[p] (unsigned indices), accumulated in the weights' dtype."""
    j, p = np.uint64(j), np.uint64(p)
    acc = weight.dtype.type(0)
    for k in range(np.uint64(weight.shape[1])):
        acc += weight[j, k] * rows[p, k]
    return acc


@numba.njit(cache=True, parallel=True)
def scan_conv(raw, denominator, valid, scale, level, out, source, weight, count, fire_count, step0, rule, blocks):
    """The sequential walk of a convolution's chunk under a rule whose neurons never interact, in
    the convolution's layout (``scan_direct`` for conv layers): each kernel walks the chunk's
    locations in stream order on its own, taking its chunk-start projection y0 until it first
    moves and a dot product with the patch after, unless it cannot fire there: a unit kernel w
    that has drifted from its chunk-start w0 has y <= a y0 + sqrt(1 - a^2) sqrt(1 - y0^2) with
    a = w . w0 (renormalising rules; a follows each move in O(1), is computed exactly once a step,
    and the bound keeps room for rounding: ``_out_of_reach``), so where that bound stays below the
    level, the kernel does not fire, whatever its dot product, and none is computed.

    A move costs one pass over the kernel: the kernel is kept as sigma * weight[j], so that
    ``w' = (c w + d x) / n`` adds ``d / (c sigma) * x`` to weight[j] and sets sigma to
    ``c sigma / n``, with n = sqrt(c^2 + d^2 + 2 c d y) for a unit w and a unit patch x when the rule
    renormalises (else 1), the length ``scan_gram`` uses. Once a step (and at the chunk end) each
    kernel that moved is written out exactly: renormalised (its rounding does not pile up), or
    scaled by sigma.

    raw (E, N, S) the projections with the chunk-start kernels before each patch is scaled;
    denominator (E, S) the patch lengths; valid (E, S); scale (E,) each step's decay scale
    (levels are scaled as in ``engine``). In place: level (N, S), out (E, N, S) fired values
    (zeros in), weight (N, K), count (N,) learnings and fire_count (N,) non-zero firings. source
    and the order of weight's values as in ``batch_conv``. Neurons in ``blocks`` interleaved
    blocks, a kernel's walk step by step and, inside a step, location by location, so that its
    weights stay in cache while it meets the patches of one image (the same bits on any thread
    count)."""
    rows, images, geometry = source
    update, params, renormalise, w_boost, constant = rule
    c0, d0 = update(0.0, w_boost, 0.0, 0.0, params)  # the move itself when the rule's is constant
    E, N, S = raw.shape
    kh, width = geometry[1], geometry[2] * geometry[5]  # a patch: kH rows of kW * C values
    tops, lefts = _patch_starts(S, geometry)
    blocks = max(1, min(N, blocks))
    start = weight.copy()  # (N, K) the chunk-start kernels
    for b in numba.prange(blocks):
        moved = np.zeros(N, np.bool_)
        align = np.ones(N)  # w . w_start of each kernel (unit rows when the rule renormalises)
        moves = np.zeros(N, np.int64)  # moves since align was last computed exactly
        reach = np.zeros(N)  # the bound on |w - (w . w_start) w_start|^2 they give (_reach)
        slack = np.zeros(N)  # and the room for rounding its projections need
        sigma = np.ones(N)  # kernel j is sigma[j] * weight[j]
        pending = np.zeros(N, np.bool_)  # moved since it was last written out
        for e in range(E + 1):  # E + 1: the write-out below also ends the chunk
            for j in range(b, N, blocks):
                if pending[j]:  # written out exactly once a step
                    if renormalise:
                        _renormalise_row(weight, j)
                    else:
                        _scale_row(weight, j, weight.dtype.type(sigma[j]))
                    sigma[j], pending[j] = 1.0, False
                if renormalise and moved[j] and e < E:  # and its alignment, so that rounding cannot pile up
                    exact = _rows_dot64(weight, j, start, j)
                    align[j], moves[j] = exact, 0
                    reach[j], slack[j] = _reach(exact, 0)
            if e == E:
                break
            step_scale = scale[e]
            for j in range(b, N, blocks):
                for s in range(S):
                    if not valid[e, s]:
                        continue
                    top, left = tops[s], lefts[s]
                    y0 = raw[e, j, s] / denominator[e, s]  # the chunk-start projection
                    if not moved[j]:
                        y = y0
                    elif renormalise and _out_of_reach(float(y0), align[j], reach[j], slack[j], step_scale,
                                                       float(level[j, s])):
                        continue  # it cannot reach its level, whatever its dot product: none computed
                    elif rows.shape[0] > 0:
                        y = weight.dtype.type(sigma[j] * _row_dot(weight, j, rows, e * S + s))
                    else:
                        y = weight.dtype.type(sigma[j] * _patch_dot(weight, j, images, e, top, left, kh, width)
                                              / denominator[e, s])
                    scaled = y * step_scale
                    if scaled < level[j, s]:
                        continue
                    out[e, j, s] = y
                    level[j, s] = scaled
                    c, d = (c0, d0) if constant else update(float(y), w_boost, float(count[j]), step0 + e, params)
                    count[j] += 1
                    fire_count[j] += y != 0
                    length = math.sqrt(max(0.0, c * c + d * d + 2.0 * c * d * float(y))) if renormalise else 1.0
                    if abs(c * sigma[j]) < LAZY_SCALE_FLOOR:  # w' = (c w + d x) / n written out
                        _scale_row(weight, j, weight.dtype.type(c * sigma[j]))
                        share, sigma[j] = d, 1.0 / length
                    else:
                        share, sigma[j] = d / (c * sigma[j]), c * sigma[j] / length
                    if rows.shape[0] > 0:
                        _add_row(weight, j, weight.dtype.type(share), rows, e * S + s)
                    else:
                        _add_patch(weight, j, weight.dtype.type(share / denominator[e, s]), images, e, top, left, kh, width)
                    if renormalise:
                        align[j] = (c * align[j] + d * float(y0)) / length  # (c w + d x) / n . w_start
                        moves[j] += 1
                        reach[j], slack[j] = _reach(align[j], moves[j])
                    moved[j], pending[j] = True, True


@numba.njit(cache=True)
def batch_coefficients(lists, values, count, step0, rule, keep, coef):
    """The batch move as dense coefficients, for the tensor path: keep (N,) the weight of each
    neuron's start weight, coef (P, N) the weight of each input (zeros in); count (N,) += the
    learnings (lists: ``learned_lists``). Neurons that did not learn keep 1."""
    start, at = lists
    ys = np.empty(at.shape[0])
    d = np.empty(at.shape[0])
    for j in range(values.shape[1]):
        n = start[j + 1] - start[j]
        if n == 0:
            keep[j] = 1.0
            continue
        keep[j] = _combined(values, j, at, start[j], start[j + 1], count, step0, rule, ys, d)
        for f in range(start[j], start[j + 1]):
            coef[at[f], j] = d[f]
        count[j] += n


@numba.njit(cache=True)
def scan_positions(u, gram, scale, stream, active, state, rule, switches, out, won):
    """Position-major exact walk for neurons that interact (k-winners-take-all, repulsion).

    u (N, P) scaled projections with the start weights; gram (P, P) scaled ``x_i . x_k * r**-e_k``
    when ``use_gram`` (then u is kept current for every neuron: a move ``w' = (c w + d x_i +
    sum_m rho_m (w - w_m)) / n`` gives ``u' = (c u + d gram[i] + sum_m rho_m (u - u_m)) / n``,
    rho_m = repulsion / |w - w_m|), else unused and moved neurons' projections are recomputed as
    dot products; active (N,) neurons that cross a threshold somewhere with their start weights
    (the others can never fire: they only move when they fire). switches = (k_winners,
    repulsion, repulsion_cosine, use_gram). In place: out (N, P) fired values, won (N, P) where a
    neuron learned.

    At each position: the fired neurons (y >= level), the k most excited of them learn
    (k_winners 0: all; ties go to the lower index), every learner's new weight is computed from
    the weights at the start of the position, then all are written.
    """
    x, valid, slot, step = stream
    weight, level, count = state
    update, params, renormalise, w_boost, constant = rule
    c0, d0 = update(0.0, w_boost, 0.0, 0.0, params)  # the move itself when the rule's is constant
    k_winners, repulsion, repulsion_cosine, use_gram = switches
    n_neurons, n_pos = u.shape
    dim = x.shape[1]
    act = np.nonzero(active)[0]
    n_act = act.shape[0]
    moved = np.zeros(n_neurons, np.bool_)
    wnorm = np.empty(n_neurons)
    for m in range(n_neurons):
        wnorm[m] = math.sqrt(_dot(weight[m], weight[m]))
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
                scaled = _dot(weight[j], x[i]) * scale[i]
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
            c, d = (c0, d0) if constant else update(y, w_boost, float(count[j]), step[i], params)
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
            if renormalise:
                norm = math.sqrt(_dot(new_w[l], new_w[l]))
                for k in range(dim):
                    new_w[l, k] /= norm
                if use_gram:
                    for p in range(i + 1, n_pos):
                        new_u[l, p] /= norm
        for l in range(n_learn):
            j = learners[l]
            for k in range(dim):
                weight[j, k] = new_w[l, k]
            wnorm[j] = math.sqrt(_dot(new_w[l], new_w[l]))
            level[j, s] = learner_u[l]
            count[j] += 1
            won[j, i] = True
            moved[j] = True
            if use_gram:
                for p in range(i + 1, n_pos):
                    u[j, p] = new_u[l, p]


@numba.njit(cache=True, fastmath=True)
def _dot_same(a, b):
    """a . b accumulated in the inputs' dtype, reassociated (float32 SIMD: a matrix-vector
    product at memory speed, where a float64 sum halves the lanes)."""
    acc = a.dtype.type(0)
    for k in range(a.shape[0]):
        acc += a[k] * b[k]
    return acc


@numba.njit(cache=True, fastmath=True)
def _move_row(w, x, c, d, renormalise):
    """w <- c w + d x in place, then scaled to unit length when ``renormalise``: one pass that
    moves and sums the squares (reassociated: SIMD), one that scales."""
    squares = 0.0
    for k in range(w.shape[0]):
        v = c * w[k] + d * x[k]
        w[k] = v
        squares += v * v
    if renormalise:
        scale = w.dtype.type(1.0 / math.sqrt(squares))
        for k in range(w.shape[0]):
            w[k] *= scale


@numba.njit(cache=True)
def _unit_input(x, unit) -> bool:
    """x scaled to unit length into ``unit`` (nothing to do when unit is empty: x is unit already);
    False, with unit untouched, when x's length is not an ordinary number (zero, tiny, overflowing,
    NaN)."""
    if unit.shape[0] == 0:
        return True
    length = math.sqrt(_dot(x, x))
    if not (2.0 ** -SAFE_EXPONENT <= length < math.inf):
        return False
    scale = x.dtype.type(length)
    for k in range(x.shape[0]):
        unit[k] = x[k] / scale
    return True


@numba.njit(cache=True)
def _step_rows(first, end, unit, y, weight, level, move, counters, out):
    """Rows first:end of ``single_step``: project (unless y is given), fire, move, count, decay."""
    c, d, renormalise, decay, _ = move
    learn_count, fire_count, _ = counters
    given = y.shape[0] > 0
    for j in range(first, end):
        w = weight[j]
        value = y[j] if given else _dot_same(w, unit)
        if value >= level[j]:
            i = j if c.shape[0] > 1 else 0
            _move_row(w, unit, w.dtype.type(c[i]), w.dtype.type(d[i]), renormalise)
            level[j] = value
            out[j] = value
            learn_count[j] += 1
            if value != 0:
                fire_count[j] += 1
        level[j] *= decay


@numba.njit(cache=True)
def _finish_step(move, counters, out):
    """The step counted, and out scaled to unit length when the move says so (squares summed in
    row order: the same on any thread count)."""
    counters[2][0] += 1
    if move[4]:
        square_sum = 0.0
        for j in range(out.shape[0]):
            square_sum += float(out[j]) * float(out[j])
        if square_sum > 0:
            length = out.dtype.type(math.sqrt(square_sum))
            for j in range(out.shape[0]):
                out[j] /= length


@numba.njit(cache=True)
def single_step(x, unit, y, weight, level, move, counters, out):
    """One sample of a rule whose neurons do not interact, the whole state change in one call (a
    Ctrl-C lands before or after it, never inside) and one pass over the weights.

    x (K,) the input; ``unit`` (K,) receives it scaled to unit length (or, when empty, x is unit
    already). y (N,) the projections, or empty to compute each here as its row is read. Neuron j
    fires where y[j] >= level[j], outputs y[j] (out (N,), zeros in), moves to ``c w + d x``,
    renormalised when the rule does, and its level becomes y[j]; then every level decays.
    move = (c, d, renormalise, decay, normalize_output): c and d of length N, or 1 when the
    rule's move is constant; normalize_output scales out to unit length. counters =
    (learn_count, fire_count, samples) with samples (1,). Returns 0, or -1 without a change when
    x's length is not an ordinary number (the caller's general path handles those)."""
    if not _unit_input(x, unit):
        return -1
    unit = unit if unit.shape[0] > 0 else x
    _step_rows(0, weight.shape[0], unit, y, weight, level, move, counters, out)
    _finish_step(move, counters, out)
    return 0


@numba.njit(cache=True, parallel=True)
def single_step_threaded(x, unit, y, weight, level, move, counters, out, blocks):
    """``single_step`` with the rows in one contiguous block per thread: each thread meets the
    same rows at every call, so that they stay in its core's cache between calls (a 1000 x 784
    float32 layer is larger than one core's L2). The same bits on any thread count."""
    if not _unit_input(x, unit):
        return -1
    unit = unit if unit.shape[0] > 0 else x
    N = weight.shape[0]
    blocks = max(1, min(N, blocks))
    for b in numba.prange(blocks):
        _step_rows(b * N // blocks, (b + 1) * N // blocks, unit, y, weight, level, move, counters, out)
    _finish_step(move, counters, out)
    return 0


@numba.njit(cache=True)
def count_fired(out, counts):
    """counts (N,) += the number of non-zero entries in each column of out (P, N): one pass,
    no (P, N) temporaries."""
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            if out[i, j] != 0:
                counts[j] += 1


def as_array(t):
    """A contiguous numpy view of a CPU tensor (copy only when not contiguous)."""
    return np.ascontiguousarray(t.numpy())
