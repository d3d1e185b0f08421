"""Plain per-sample Frontprop, written straight from the spec: the reference the fast code must match."""
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
                r0, c0 = i * stride[0], k * stride[1]
                p = Xp[b, :, r0:r0 + kh, c0:c0 + kw].reshape(-1)
                if p.norm() == 0:
                    continue
                touched = True
                p = p / p.norm()
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
    """The documented batch variant over flat inputs X (B, D), one neuron at a time, chunk by chunk.

    threshold (N, 1). Returns outputs (B, N) (fired y, not normalised), W, t.
    """
    W, t = weight.clone(), threshold.clone()
    r = 1 - t_decay
    X = X[X.norm(dim=1) > 0]
    X = X / X.norm(dim=1, keepdim=True)
    outs = []
    for start in range(0, len(X), chunk):
        xs = X[start:start + chunk]
        E = len(xs)
        out = torch.zeros(E, W.shape[0], dtype=X.dtype)
        for j in range(W.shape[0]):
            fired_inputs, best = [], None
            for e, x in enumerate(xs):
                y = W[j] @ x
                if y >= t[j, 0] * r ** e:
                    out[e, j] = y
                    fired_inputs.append(x)
                    level = y * r ** (E - e)
                    best = level if best is None else max(best, level)
            if fired_inputs:
                k = len(fired_inputs)
                mean = torch.stack(fired_inputs).mean(0)
                w = W[j] + (1 - (1 - w_boost) ** k) * (mean - W[j])
                W[j] = w / w.norm()
                t[j, 0] = best
            else:
                t[j, 0] = t[j, 0] * r ** E
        outs.append(out)
    return torch.cat(outs), W, t
