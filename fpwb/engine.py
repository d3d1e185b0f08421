"""The Frontprop rule over a chunk of inputs: exact sequential solver and parallel batch update.

Both layers reduce their input to the same picture: a chunk of E steps (samples), each holding S
slots (FpLinear: one; FpConv2d: one per output location), each slot a unit vector of K values.
Every neuron has one threshold per slot. The stream order is step by step, slots in order inside a
step; every threshold decays once at the end of each step.

The sequential solver relies on one fact of the rule: neurons never interact. A neuron's path
through the chunk depends only on its own weights, its own thresholds and the inputs. So instead
of walking the stream sample by sample, it walks *firing rounds*: in round k every neuron that
still fires somewhere finds its next firing position at once (one compare over the chunk), takes
its update there, and recomputes its projections for the rest of the chunk (one matmul for all
those neurons). The number of rounds is the largest number of times any single neuron fires in the
chunk, not the number of samples.

Thresholds are compared in a scaled domain so that pure decay needs no work: a threshold t set
before step e0 has decayed to t * r**(e - e0) at step e (r = 1 - t_decay), so
``y >= t * r**(e - e0)``  <=>  ``y * r**-e >= t * r**-e0``. Each neuron keeps one scaled *level*
per slot, and a firing at step e sets it to ``y * r**-e``.
"""
from __future__ import annotations

import math

import torch

from . import kernels

# Scaled thresholds grow like r**-E over a chunk; keep that factor well inside float32 range.
MAX_SCALE = 1e6


def max_steps(t_decay: float, requested: int) -> int:
    """Largest chunk length (in steps) whose decay scale r**-E stays below MAX_SCALE."""
    limit = math.log(MAX_SCALE) / -math.log1p(-t_decay) if t_decay < 1 else 1
    return max(1, min(requested, int(limit)))


def decay_scale(steps: int, r: float, like: torch.Tensor) -> torch.Tensor:
    """r**-e for e = 0..steps-1, in the dtype and device of ``like``.  # (E,)"""
    e = torch.arange(steps, device=like.device, dtype=like.dtype)
    return torch.exp(-e * math.log(r))


def sequential_chunk(x, valid, weight, threshold, w_boost, t_decay, solver=None):
    """Run the exact per-sample rule over one chunk, in place on ``weight`` and ``threshold``.

    x: (E, S, K) unit rows (zero rows where ``valid`` is False); valid: (E, S) bool;
    weight: (N, K) unit rows; threshold: (N, S). Returns the fired values, (E, S, N): y where the
    neuron fired at that position, 0 elsewhere. On CPU the per-neuron walks run compiled
    (``fpwb.kernels``, scan "gram" or "direct", picked by cost); on other devices they run as
    vectorised firing rounds ("rounds"). ``solver`` forces one of the three (tests use it).
    """
    if solver is None:
        solver = "auto" if x.device.type == "cpu" else "rounds"
    if solver == "rounds":
        return sequential_rounds(x, valid, weight, threshold, w_boost, t_decay)
    return sequential_cpu(x, valid, weight, threshold, w_boost, t_decay, scan=solver)


def sequential_cpu(x, valid, weight, threshold, w_boost, t_decay, scan="auto"):
    """CPU solver: one matmul for all projections, then compiled per-neuron scans."""
    E, S, K = x.shape
    P = E * S
    r = 1.0 - t_decay
    scale = decay_scale(E, r, x).repeat_interleave(S)  # (P,)
    flat_x = x.reshape(P, K)
    flat_valid = valid.reshape(P)
    u = (weight @ flat_x.T) * scale  # (N, P) scaled projections
    fires = ((u.view(-1, E, S) >= threshold.unsqueeze(1)) & valid).flatten(1).any(1)  # (N,)
    out = x.new_zeros(P, weight.shape[0])
    idx = fires.nonzero().squeeze(1)  # (A,) neurons that fire somewhere in the chunk
    if idx.numel():
        A = idx.numel()
        u_a, level, out_a = u[idx].contiguous(), threshold[idx].contiguous(), x.new_zeros(A, P)
        slot = torch.arange(P).remainder_(S)
        args = (kernels.as_array(flat_valid), kernels.as_array(slot), level.numpy())
        # Gram pays P*P*K once and P per firing; direct pays up to K per position after a firing.
        if scan == "gram" or (scan == "auto" and P / A + P / K < 1):
            gram = (flat_x @ flat_x.T) * scale  # (P, P)
            coef_x, coef_w = x.new_zeros(A, P), x.new_zeros(A)
            kernels.scan_gram(u_a.numpy(), gram.numpy(), (1.0 / scale).numpy(), *args, w_boost,
                              out_a.numpy(), coef_x.numpy(), coef_w.numpy())
            w = coef_w.unsqueeze(1) * weight[idx] + coef_x @ flat_x  # (A, K)
        else:
            w = weight[idx].contiguous()
            kernels.scan_direct(u_a.numpy(), kernels.as_array(flat_x), w.numpy(), scale.numpy(),
                                *args, w_boost, out_a.numpy())
        weight[idx] = w / w.norm(dim=1, keepdim=True)
        threshold[idx] = level
        out[:, idx] = out_a.T
    threshold.mul_(r ** E)
    return out.view(E, S, -1)


def sequential_rounds(x, valid, weight, threshold, w_boost, t_decay):
    """Device-generic solver: firing rounds vectorised over neurons (see the module docstring)."""
    E, S, K = x.shape
    N = weight.shape[0]
    r = 1.0 - t_decay
    scale = decay_scale(E, r, x)  # (E,)
    flat_x = x.reshape(E * S, K)  # (P, K), position p = e * S + s
    out = x.new_zeros(E * S, N)

    projections = flat_x @ weight.T  # (P, N)
    scaled = projections.view(E, S, N) * scale.view(E, 1, 1)
    scaled.masked_fill_(~valid.unsqueeze(-1), -math.inf)
    level = threshold.T.contiguous()  # (S, N) scaled levels, start of chunk = raw thresholds
    fires = (scaled >= level).view(E * S, N)  # (P, N)
    any_fire = fires.any(0)  # (N,)
    if not bool(any_fire.any()):
        threshold.mul_(r ** E)
        return out.view(E, S, N)

    idx = any_fire.nonzero().squeeze(1)  # (A,) neurons that fire at least once
    w = weight[idx]  # (A, K)
    lev = level[:, idx]  # (S, A)
    fires = fires[:, idx]  # (P, A)
    values = projections[:, idx]  # (P, A)
    position = torch.arange(E * S, device=x.device)
    step_scale = scale.repeat_interleave(S)  # (P,)
    slot = position % S  # (P,)
    cols = torch.arange(idx.numel(), device=x.device)
    valid_flat = valid.reshape(E * S, 1)
    while True:
        first = fires.to(torch.uint8).argmax(0)  # (A,) first firing position of each neuron
        y = values[first, cols]  # (A,)
        out[first, idx] = y
        w += w_boost * (flat_x[first] - w)
        w /= w.norm(dim=1, keepdim=True)
        lev[slot[first], cols] = y * step_scale[first]
        # Only positions after each neuron's latest firing can fire it next.
        later = position.unsqueeze(1) > first  # (P, A)
        values = flat_x @ w.T  # (P, A)
        scaled = values * step_scale.unsqueeze(1)
        fires = (scaled.view(E, S, -1) >= lev).view(E * S, -1) & later & valid_flat
        still = fires.any(0)  # (A,)
        if not bool(still.all()):
            done = ~still
            weight[idx[done]] = w[done]
            threshold[idx[done]] = lev[:, done].T
            if not bool(still.any()):
                break
            idx, w, lev, fires, values = idx[still], w[still], lev[:, still], fires[:, still], values[:, still]
            cols = torch.arange(idx.numel(), device=x.device)
    threshold.mul_(r ** E)
    return out.view(E, S, N)


def batch_chunk(x, valid, weight, threshold, w_boost, t_decay):
    """The parallel mini-batch variant, in place on ``weight`` and ``threshold``.

    Every position sees the weights of the chunk start, and thresholds decayed by step as in
    sequential mode (``t * r**e`` at step e), so firing decisions are made in parallel. Updates of
    a neuron that fired at k positions combine into one move toward the mean m of those inputs,
    worth k sequential steps: ``w <- normalise(w + (1 - (1 - w_boost)**k) * (m - w))`` (k = 1 is
    exactly the sequential update). Each threshold slot that fired takes its strongest firing
    value, decayed over the steps after it, ``max_e y_e * r**(E - e)``; the others decay by r**E.
    Shapes as in :func:`sequential_chunk`; returns the fired values, (E, S, N).
    """
    E, S, K = x.shape
    N = weight.shape[0]
    r = 1.0 - t_decay
    scale = decay_scale(E, r, x)  # (E,)
    flat_x = x.reshape(E * S, K)  # (P, K)
    values = (flat_x @ weight.T).view(E, S, N)
    fired = (values * scale.view(E, 1, 1) >= threshold.T) & valid.unsqueeze(-1)  # (E, S, N)
    out = values * fired

    count = fired.sum(dim=(0, 1))  # (N,)
    learners = count > 0
    if bool(learners.any()):
        sums = fired.view(E * S, N).T.to(x.dtype) @ flat_x  # (N, K)
        k = count[learners].to(x.dtype).unsqueeze(1)
        step = 1.0 - (1.0 - w_boost) ** k
        w = weight[learners]
        w = w + step * (sums[learners] / k - w)
        weight[learners] = w / w.norm(dim=1, keepdim=True)
        # Strongest firing per slot, expressed as a scaled level (see module docstring).
        levels = torch.where(fired, values * scale.view(E, 1, 1), values.new_tensor(-math.inf))
        best = levels.amax(dim=0).T  # (N, S)
        threshold.copy_(torch.where(best > -math.inf, best, threshold))
    threshold.mul_(r ** E)
    return out
