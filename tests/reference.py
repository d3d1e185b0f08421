"""Plain per-sample Frontprop, written straight from the spec: the reference the fast code must match.

The switches (``rule``, ``k_winners``, ``k_output``, ``repulsion``, ``repulsion_cosine``) are
written here as plainly as the rule: one position at a time, one neuron at a time.
"""
import math

import torch

PLAIN = dict(rule="frontprop", k_winners=None, k_output=False, repulsion=0.0, repulsion_cosine=0.9)


def reference_step(W, t, x, w_boost, rule="frontprop", k_winners=None, k_output=False,
                   repulsion=0.0, repulsion_cosine=0.9):
    """One position: W (N, K) weights, t (N,) thresholds of this slot, x (K,) unit input.

    Returns the new W, new t and the output (N,). Every learner's update is computed from W as it
    was at the start of the position.
    """
    y = W @ x
    fired = (y >= t).nonzero().flatten().tolist()
    winners = sorted(fired, key=lambda j: -float(y[j]))  # stable: ties keep the lower index first
    if k_winners is not None:
        winners = winners[:k_winners]
    new_W, new_t = W.clone(), t.clone()
    for j in winners:
        if rule == "oja":
            w = W[j] + w_boost * y[j] * (x - y[j] * W[j])
        else:
            w = W[j] + w_boost * (x - W[j])
        if repulsion > 0:
            for m in range(len(W)):
                cosine = W[j] @ W[m] / (W[j].norm() * W[m].norm())
                away = W[j] - W[m]
                if m != j and cosine > repulsion_cosine and away.norm() > 0:
                    w = w + repulsion * away / away.norm()
        new_W[j] = w if rule == "oja" else w / w.norm()
        new_t[j] = y[j]
    shown = winners if k_output else fired
    out = torch.zeros_like(y)
    out[shown] = y[shown]
    return new_W, new_t, out


def reference_linear(weight, threshold, X, w_boost, t_decay, **switches):
    """Sample by sample over X (B, D). Returns outputs (B, N) (fired y, not normalised), W, t."""
    W, t = weight.clone(), threshold.clone()
    outs = []
    for x in X:
        norm = x.norm()
        if norm == 0:
            outs.append(torch.zeros_like(t))
            continue
        x = x / norm
        if switches:
            W, t, out = reference_step(W, t, x, w_boost, **switches)
            t = t * (1 - t_decay)
            outs.append(out)
            continue
        y = W @ x
        fired = y >= t
        for j in fired.nonzero().flatten().tolist():
            w = W[j] + w_boost * (x - W[j])
            W[j] = w / w.norm()
            t[j] = y[j]
        t = t * (1 - t_decay)
        outs.append(torch.where(fired, y, torch.zeros_like(y)))
    return torch.stack(outs), W, t


def unit_patch(Xp, b, i, k, size, stride):
    """The patch of padded sample b under output location (i, k), flat and scaled to unit
    length; None when it is all zero."""
    r0, c0 = i * stride[0], k * stride[1]
    p = Xp[b, :, r0:r0 + size[0], c0:c0 + size[1]].reshape(-1)
    return None if p.norm() == 0 else p / p.norm()


def reference_conv(weight, threshold, X, w_boost, t_decay, stride=(1, 1), padding=(0, 0), **switches):
    """Sample by sample, location by location in raster order, over X (B, C, H, W).

    weight (N, C, kH, kW); threshold (N, Ho, Wo). Thresholds decay once after each sample.
    Returns outputs (B, N, Ho, Wo) (fired y, not normalised), weight, threshold.
    """
    N, C, kh, kw = weight.shape
    W = weight.reshape(N, -1).clone()
    t = threshold.clone()
    _, Ho, Wo = t.shape
    Xp = torch.nn.functional.pad(X, (padding[1], padding[1], padding[0], padding[0]))
    outs = torch.zeros(X.shape[0], N, Ho, Wo, dtype=X.dtype)
    for b in range(X.shape[0]):
        touched = False
        for i in range(Ho):
            for k in range(Wo):
                p = unit_patch(Xp, b, i, k, (kh, kw), stride)
                if p is None:
                    continue
                touched = True
                if switches:
                    W, t[:, i, k], outs[b, :, i, k] = reference_step(W, t[:, i, k], p, w_boost,
                                                                     **switches)
                    continue
                y = W @ p
                fired = y >= t[:, i, k]
                for j in fired.nonzero().flatten().tolist():
                    w = W[j] + w_boost * (p - W[j])
                    W[j] = w / w.norm()
                    t[j, i, k] = y[j]
                outs[b, :, i, k] = torch.where(fired, y, torch.zeros_like(y))
        if touched:
            t = t * (1 - t_decay)
    return outs, W.reshape(weight.shape), t


def reference_batch(weight, threshold, X, w_boost, t_decay, chunk, **switches):
    """The documented batch variant over flat inputs X (B, D), one neuron at a time, chunk by chunk:
    the neuron's threshold runs through the chunk as in sequential mode while its weights stay
    at the chunk start; then it moves once toward the mean of the inputs it fired on.

    threshold (N, 1). Returns outputs (B, N) (fired y, not normalised), W, t.
    """
    if switches:
        return reference_batch_switches(weight, threshold, X, w_boost, t_decay, chunk, **switches)
    W, t = weight.clone(), threshold.clone()
    r = 1 - t_decay
    X = X[X.norm(dim=1) > 0]
    X = X / X.norm(dim=1, keepdim=True)
    outs = []
    for start in range(0, len(X), chunk):
        xs = X[start:start + chunk]
        out = torch.zeros(len(xs), W.shape[0], dtype=X.dtype)
        for j in range(W.shape[0]):
            fired_inputs = []
            for e, x in enumerate(xs):
                y = W[j] @ x
                if y >= t[j, 0]:
                    out[e, j] = y
                    fired_inputs.append(x)
                    t[j, 0] = y
                t[j, 0] = t[j, 0] * r
            if fired_inputs:
                k = len(fired_inputs)
                mean = torch.stack(fired_inputs).mean(0)
                w = W[j] + (1 - (1 - w_boost) ** k) * (mean - W[j])
                W[j] = w / w.norm()
        outs.append(out)
    return torch.cat(outs), W, t


def reference_conv_batch(weight, threshold, X, w_boost, t_decay, chunk, stride=(1, 1), padding=(0, 0)):
    """The batch variant of FpConv2d, location by location: every location of every sample in a
    chunk of ``chunk`` (non-zero) samples sees the kernels of the chunk start; the thresholds run
    as in sequential mode; then each kernel moves once toward the mean of the patches it fired on.

    X (B, C, H, W); weight (N, C, kH, kW); threshold (N, Ho, Wo). Returns outputs (B, N, Ho, Wo)
    (fired y, not normalised), weight, threshold.
    """
    N, C, kh, kw = weight.shape
    W = weight.reshape(N, -1).clone()
    t = threshold.clone()
    _, Ho, Wo = t.shape
    r = 1 - t_decay
    Xp = torch.nn.functional.pad(X, (padding[1], padding[1], padding[0], padding[0]))
    outs = torch.zeros(X.shape[0], N, Ho, Wo, dtype=X.dtype)
    samples = [b for b in range(X.shape[0]) if X[b].norm() > 0]
    for start in range(0, len(samples), chunk):
        fired_inputs = [[] for _ in range(N)]
        for b in samples[start:start + chunk]:
            for i in range(Ho):
                for k in range(Wo):
                    p = unit_patch(Xp, b, i, k, (kh, kw), stride)
                    if p is None:
                        continue
                    y = W @ p
                    for j in (y >= t[:, i, k]).nonzero().flatten().tolist():
                        outs[b, j, i, k] = y[j]
                        fired_inputs[j].append(p)
                        t[j, i, k] = y[j]
            t = t * r
        for j, inputs in enumerate(fired_inputs):
            if inputs:
                n = len(inputs)
                w = W[j] + (1 - (1 - w_boost) ** n) * (torch.stack(inputs).mean(0) - W[j])
                W[j] = w / w.norm()
    return outs, W.reshape(weight.shape), t


def reference_batch_switches(weight, threshold, X, w_boost, t_decay, chunk, rule="frontprop",
                             k_winners=None, k_output=False, repulsion=0.0, repulsion_cosine=0.9):
    """The batch variant with the switches (see ``fpwb.layers.engine.batch_chunk``), written plainly:
    decide firings and winners per sample with the chunk-start weights and running thresholds,
    then update each neuron."""
    W, t = weight.clone(), threshold.clone()
    r = 1 - t_decay
    X = X[X.norm(dim=1) > 0]
    X = X / X.norm(dim=1, keepdim=True)
    N = len(W)
    outs = []
    for start in range(0, len(X), chunk):
        xs = X[start:start + chunk]
        E = len(xs)
        out = torch.zeros(E, N, dtype=X.dtype)
        learned = [[] for _ in range(N)]  # (e, y) where each neuron learned
        for e, x in enumerate(xs):
            y = W @ x
            fired = [j for j in range(N) if y[j] >= t[j, 0]]
            winners = sorted(fired, key=lambda j: -float(y[j]))  # stable: ties keep index order
            if k_winners is not None:
                winners = winners[:k_winners]
            for j in (winners if k_output else fired):
                out[e, j] = y[j]
            for j in winners:
                learned[j].append((e, y[j]))
                t[j, 0] = y[j]
            t = t * r
        new_W = W.clone()
        for j in range(N):
            if not learned[j]:
                continue
            if rule == "oja":
                w = W[j] + w_boost * sum(y * (xs[e] - y * W[j]) for e, y in learned[j])
            else:
                k = len(learned[j])
                mean = torch.stack([xs[e] for e, _ in learned[j]]).mean(0)
                w = W[j] + (1 - (1 - w_boost) ** k) * (mean - W[j])
            if repulsion > 0:
                for m in range(N):
                    cosine = W[j] @ W[m] / (W[j].norm() * W[m].norm())
                    away = W[j] - W[m]
                    if m != j and cosine > repulsion_cosine and away.norm() > 0:
                        w = w + repulsion * away / away.norm()
            new_W[j] = w if rule == "oja" else w / w.norm()
        W = new_W
        outs.append(out)
    return torch.cat(outs), W, t
