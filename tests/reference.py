"""Plain per-sample Frontprop, written straight from the spec, independent of the package: the
naive reference the plain rule's fast paths (and its ``mode="reference"``) must match.

The other rules and the switches are checked against the package's own references
(``mode="reference"``, each rule's ``step``), see tests/test_rules.py and tests/test_switches.py.
"""
import torch


def reference_linear(weight, threshold, X, w_boost, t_decay):
    """Sample by sample over X (B, D). Returns outputs (B, N) (fired y, not normalised), W, t."""
    W, t = weight.clone(), threshold.clone()
    outs = []
    for x in X:
        norm = x.norm()
        if norm == 0:
            outs.append(torch.zeros_like(t))
            continue
        x = x / norm
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


def reference_conv(weight, threshold, X, w_boost, t_decay, stride=(1, 1), padding=(0, 0)):
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


def reference_batch(weight, threshold, X, w_boost, t_decay, chunk):
    """The documented batch variant over flat inputs X (B, D), one neuron at a time, chunk by chunk:
    the neuron's threshold runs through the chunk as in sequential mode while its weights stay
    at the chunk start; then it moves once toward the mean of the inputs it fired on.

    threshold (N, 1). Returns outputs (B, N) (fired y, not normalised), W, t.
    """
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
