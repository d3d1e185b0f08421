"""Measure a representation: features from a frozen layer (``embed``), then a linear and a k-NN probe.

Readouts (how a layer's response to x becomes features), with x scaled to unit length as the
layer sees it and y = W x the cosines (B, N):

- ``fired``: the layer's own output, y where y >= threshold else 0 (scaled to unit length per
  sample when the layer's ``normalize_output`` is on). Depends on the learned thresholds.
- ``relu``: max(0, y).
- ``topk``: the k largest y of each sample, the rest 0 (k = 10% of the features unless given).
- ``linear``: y itself.

For FpConv2d the features are the (N, H_out, W_out) map, flattened.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from ..layers.base import FpLayer, unit_rows
from ..layers.conv import FpConv2d
from ..layers.linear import FpLinear

READOUTS = ("fired", "relu", "topk", "linear")

#: The linear probe's protocol (see ``linear_probe``): L2 strength on the mean loss, iterations,
#: gradient tolerance. Chosen on Fashion-MNIST raw pixels: l2 = 1e-3 is within 0.1 point of the
#: best test accuracy and accuracy has settled by 100 L-BFGS iterations.
PROBE_L2 = 1e-3
PROBE_MAX_ITER = 100
PROBE_TOL = 1e-3


def topk_count(n_features: int, k=None) -> int:
    """The k of the ``topk`` readout: k if given, else 10% of the features (at least 1)."""
    if k is None:
        return max(1, round(0.1 * n_features))
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n_features:
        raise ValueError(f"k must be an int in [1, {n_features}], got {k!r}")
    return k


def cosines(model: FpLayer, x: torch.Tensor) -> torch.Tensor:
    """y = W x with x (or each patch) scaled to unit length, without thresholds and without
    learning: (B, N) or (B, N, H_out, W_out). x is checked as the layer's forward checks it."""
    x = model._check_tensor(x)
    if isinstance(model, FpLinear):
        unit, _ = unit_rows(x)
        return unit @ model.weight.T  # (B, N)
    unit, _ = model.unit_patches(x)  # (B, L, K)
    y = unit @ model.weight.view(model.out_channels, -1).T  # (B, L, N)
    return y.transpose(1, 2).reshape(len(x), model.out_channels, *model.output_size(*x.shape[2:]))


def embed(model: FpLayer, X: torch.Tensor, batch_size: int = 1024, readout: str = "fired",
          k=None) -> torch.Tensor:
    """Features (n, F) of X under a frozen model, leaving every buffer and flag of the model untouched.

    model: an FpLinear (X (n, D), or images (n, C, H, W) flattened to D) or an FpConv2d
    (X (n, C, H, W)). readout: one of READOUTS (see the module docstring); k: for ``topk``.
    """
    if not isinstance(model, (FpLinear, FpConv2d)):
        raise ValueError(f"embed expects an FpLinear or FpConv2d, got {type(model).__name__}")
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(X, torch.Tensor) or X.dim() < 2 or len(X) == 0:
        raise ValueError(f"embed expects a non-empty tensor (n, ...), got {getattr(X, 'shape', type(X))}")
    if isinstance(model, FpLinear) and X.dim() > 2:
        X = X.reshape(len(X), -1)
    if readout == "fired" and isinstance(model, FpConv2d) and model.threshold is None:
        raise ValueError("the FpConv2d has no thresholds yet (it never ran a forward): the 'fired' "
                         "readout needs them; use another readout or train the layer first")
    training, frozen = model.training, model.frozen
    model.eval().freeze()  # forward passes below map inputs and change nothing
    try:
        out = []
        with torch.no_grad():
            for start in range(0, len(X), batch_size):
                xb = X[start:start + batch_size]  # checked and cast by the forward or by cosines
                if readout == "fired":
                    f = model(xb)
                else:
                    f = cosines(model, xb)
                    if readout == "relu":
                        f = f.clamp_min(0)
                    elif readout == "topk":
                        flat = f.reshape(len(f), -1)
                        top = flat.topk(topk_count(flat.shape[1], k), dim=1)
                        f = torch.zeros_like(flat).scatter_(1, top.indices, top.values)
                out.append(f.reshape(len(f), -1))
        return torch.cat(out)
    finally:
        model.train(training)
        model.frozen = frozen


def _standardize(F_train, F_test):
    """Scale features by the training mean and standard deviation (constant features: by 1)."""
    mean = F_train.mean(0)
    std = F_train.std(0)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return (F_train - mean) / std, (F_test - mean) / std


def _as_features(name, F_, y):
    F_ = torch.as_tensor(F_)
    y = torch.as_tensor(y)
    if F_.dim() != 2 or y.dim() != 1 or len(F_) != len(y) or len(y) == 0:
        raise ValueError(f"{name}: expected features (n, F) and labels (n,) with n > 0, got "
                         f"{tuple(F_.shape)} and {tuple(y.shape)}")
    return F_.float(), y.long()


def linear_probe(F_train, y_train, F_test, y_test, *, standardize: bool = True, l2: float = PROBE_L2,
                 max_iter: int = PROBE_MAX_ITER, tol: float = PROBE_TOL, backend: str = "torch") -> dict:
    """Multinomial logistic regression on features; returns test accuracy and how the fit went.

    Protocol (fixed unless overridden): features standardised with the training mean and std
    (``standardize``; constant features left as they are); minimise the mean cross-entropy +
    l2/2 ||W||^2 (the bias is not penalised) over the whole training set with L-BFGS, until the
    largest gradient entry falls below ``tol`` or after ``max_iter`` iterations (``converged``
    says which). Weights start at zero, so the fit is deterministic.

    backend: ``torch`` (torch.optim.LBFGS with strong Wolfe line search, float32, analytic
    gradient; the default: several times faster on CPU) or ``sklearn`` (LogisticRegression, lbfgs,
    the same objective: C = 1 / (l2 n)).
    Returns {accuracy, train_accuracy, iterations, converged, grad_max, seconds, backend,
    standardize, l2, max_iter, tol}.
    """
    F_train, y_train = _as_features("training set", F_train, y_train)
    F_test, y_test = _as_features("test set", F_test, y_test)
    if F_train.shape[1] != F_test.shape[1]:
        raise ValueError(f"training and test features differ in width: {F_train.shape[1]} vs {F_test.shape[1]}")
    if backend not in ("torch", "sklearn"):
        raise ValueError(f"backend must be 'torch' or 'sklearn', got {backend!r}")
    if not l2 > 0:
        raise ValueError(f"l2 must be positive, got {l2!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    start = time.perf_counter()
    if standardize:
        F_train, F_test = _standardize(F_train, F_test)
    classes, y_index = torch.unique(y_train, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"the training labels hold a single class ({int(classes[0])}): nothing to probe")
    fit = _fit_torch if backend == "torch" else _fit_sklearn
    W, b, iterations = fit(F_train, y_index, len(classes), l2, max_iter, tol)  # (classes, F), (classes,)
    logits = torch.addmm(b, F_train, W.T)  # (n, classes)
    grad = (logits.softmax(1) - F.one_hot(y_index, len(classes))).T @ F_train / len(F_train) + l2 * W
    grad_max = float(grad.abs().max())
    return {"accuracy": float((classes[torch.addmm(b, F_test, W.T).argmax(1)] == y_test).float().mean()),
            "train_accuracy": float((logits.argmax(1) == y_index).float().mean()),
            "iterations": iterations, "converged": grad_max <= tol, "grad_max": grad_max,
            "seconds": time.perf_counter() - start, "backend": backend,
            "standardize": standardize, "l2": l2, "max_iter": max_iter, "tol": tol}


def _fit_torch(X, y, n_classes, l2, max_iter, tol):
    """L-BFGS on (W (classes, F), b); the gradient is written out, not taken by autograd (faster)."""
    n, d = X.shape
    W = torch.zeros(n_classes, d)
    b = torch.zeros(n_classes)
    Y = F.one_hot(y, n_classes).float()  # (n, classes)
    optimizer = torch.optim.LBFGS([W, b], lr=1, max_iter=max_iter, tolerance_grad=tol,
                                  tolerance_change=1e-9, history_size=10,
                                  line_search_fn="strong_wolfe")

    def closure():
        logp = torch.addmm(b, X, W.T).log_softmax(1)  # (n, classes)
        G = (logp.exp() - Y) / n
        W.grad = G.T @ X + l2 * W  # (classes, F): X in its own layout, the fast product
        b.grad = G.sum(0)
        return -(logp * Y).sum() / n + l2 / 2 * W.pow(2).sum()

    optimizer.step(closure)
    return W, b, optimizer.state[W]["n_iter"]


def _fit_sklearn(X, y, n_classes, l2, max_iter, tol):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1.0 / (l2 * len(X)), max_iter=max_iter, tol=tol)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported as converged=False instead
        model.fit(X.numpy(), y.numpy())
    W = torch.from_numpy(model.coef_).float()
    b = torch.from_numpy(model.intercept_).float()
    if n_classes == 2:  # scikit-learn keeps one row for two classes: logits (0, z)
        W, b = torch.cat([torch.zeros_like(W), W]), torch.cat([torch.zeros_like(b), b])
    return W, b, int(model.n_iter_[0])


def knn_probe(F_train, y_train, F_test, y_test, *, k: int = 5, chunk_size: int = 512) -> dict:
    """k-nearest-neighbour classification by cosine distance; returns {accuracy, k, seconds}.

    Each test sample takes the majority label of its k most similar training samples (ties: the
    smallest label). All-zero feature vectors have cosine 0 with everything.
    """
    F_train, y_train = _as_features("training set", F_train, y_train)
    F_test, y_test = _as_features("test set", F_test, y_test)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(F_train):
        raise ValueError(f"k must be an int in [1, {len(F_train)}], got {k!r}")
    start = time.perf_counter()
    train, _ = unit_rows(F_train)
    classes, y_index = torch.unique(y_train, return_inverse=True)
    correct = 0
    for s in range(0, len(F_test), chunk_size):
        test, _ = unit_rows(F_test[s:s + chunk_size])
        nearest = (test @ train.T).topk(k, dim=1).indices  # (b, k)
        votes = F.one_hot(y_index[nearest], len(classes)).sum(1)  # (b, classes)
        correct += int((classes[votes.argmax(1)] == y_test[s:s + chunk_size]).sum())
    return {"accuracy": correct / len(F_test), "k": k, "seconds": time.perf_counter() - start}

