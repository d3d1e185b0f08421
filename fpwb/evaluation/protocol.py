"""The one protocol every notebook and benchmark measures with: train (``fit``), then probe
(``probe``).

``fit`` trains an Fp layer for ``epochs`` passes over a data set, each pass in a new seeded
shuffled order (``fpwb.data.Batches``), with a progress bar, and returns what the fit needs to be
reported honestly: the trained layer, its weights before training (for
``fpwb.evaluation.diagnostics.learned_share``) and the seconds it took.

``probe`` reads features from a frozen model under a named readout (``features``) and fits the
standardised linear probe of ``fpwb.evaluation.probes.linear_probe`` on them; its result names the
readout, so a figure or table can say which one it shows. ``probe_features`` does the same for
features computed elsewhere (a stack's stage, a backprop model's hidden layer).

Readouts: those of ``fpwb.evaluation.probes.READOUTS`` for Fp layers and the baselines (which are
FpLinear layers), ``pixels`` (the inputs themselves, no model) and ``neutral`` (a Forward-Forward
network's features for the image with the neutral label).
"""
from __future__ import annotations

import time
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from ..data import Batches, flatten
from ..layers.base import FpLayer
from ..layers.linear import FpLinear
from . import diagnostics
from .probes import READOUTS, embed, linear_probe

#: The readout every notebook and benchmark probes unless it says otherwise: max(0, cosine), the
#: one that Frontprop, its baselines and the backprop layer share (baselines have no thresholds).
PROBE_READOUT = "relu"
#: Every readout ``features`` knows.
ALL_READOUTS = READOUTS + ("pixels", "neutral")
#: Mini-batch size of ``fit``: how many samples go to the layer per call (the exact sequential
#: rule gives the same result for any size; larger calls amortise the per-call cost).
FIT_BATCH_SIZE = 1024


class Fit(NamedTuple):
    """What ``fit`` returns: the trained layer, its weights before training, seconds spent."""
    model: FpLayer
    initial_weight: torch.Tensor
    seconds: float

    @property
    def learned_share(self) -> float:
        """Share of the layer's neurons whose weights moved from their initial values."""
        return diagnostics.learned_share(self.model, self.initial_weight)


def fit(model: FpLayer, X: torch.Tensor, *, epochs: int = 1, seed: int = 0,
        batch_size: int = FIT_BATCH_SIZE, freeze: bool = True, progress: bool = True,
        desc: str | None = None) -> Fit:
    """Train ``model`` on X for ``epochs`` passes, each in a new order drawn from ``seed``.

    model: an FpLinear (X (n, D), or images (n, C, H, W) flattened) or an FpConv2d (X (n, C, H, W)).
    X is moved to the model's device batch by batch. freeze: freeze the layer afterwards (it is
    then ready for ``probe``). progress: a tqdm bar over the mini-batches (``desc`` its label).
    Returns a :class:`Fit`.
    """
    if not isinstance(model, FpLayer):
        raise ValueError(f"fit trains an FpLinear or FpConv2d, got {type(model).__name__}")
    if not isinstance(X, torch.Tensor) or X.dim() < 2 or len(X) == 0:
        raise ValueError(f"fit expects a non-empty tensor of samples (n, ...), got {getattr(X, 'shape', type(X))}")
    if isinstance(model, FpLinear) and X.dim() > 2:
        X = flatten(X)
    batches = Batches(X, torch.zeros(len(X), dtype=torch.long), batch_size=batch_size, seed=seed,
                      epochs=epochs)
    initial = model.weight.detach().clone()
    device = model.weight.device
    start = time.perf_counter()
    for xb, _ in tqdm(batches, desc=desc or f"fit {type(model).__name__}", disable=not progress,
                      leave=False):
        model(xb.to(device))
    if freeze:
        model.freeze()
    return Fit(model, initial, time.perf_counter() - start)


def features(model, X: torch.Tensor, readout: str = PROBE_READOUT, *, k=None,
             batch_size: int = 1024) -> torch.Tensor:
    """Features (n, F) of X under ``readout``, on the CPU; the model is left as it was.

    readout: one of ALL_READOUTS. ``pixels``: X itself, flattened (model must be None);
    ``neutral``: ``model.features(X)`` of a Forward-Forward network; otherwise
    ``fpwb.evaluation.probes.embed`` of an Fp layer (k: the ``topk`` readout's k).
    """
    if readout not in ALL_READOUTS:
        raise ValueError(f"readout must be one of {ALL_READOUTS}, got {readout!r}")
    if readout == "pixels":
        if model is not None:
            raise ValueError("the 'pixels' readout reads the inputs themselves: pass model=None")
        return flatten(X).float().cpu()
    if readout == "neutral":
        if not hasattr(model, "features"):
            raise ValueError(f"the 'neutral' readout needs a Forward-Forward network, got {type(model).__name__}")
        return model.features(X).cpu()
    device = model.weight.device
    return embed(model, X.to(device), batch_size, readout=readout, k=k).cpu()


def probe_features(F_train, y_train, F_test, y_test, *, readout: str, **probe_kwargs) -> dict:
    """The linear probe on given features (n, F): ``linear_probe``'s result plus the name of the
    readout that made them (``readout``, any short name) and the feature count (``features``)."""
    if not isinstance(readout, str) or not readout:
        raise ValueError(f"readout must name the features, got {readout!r}")
    result = linear_probe(torch.as_tensor(F_train).cpu(), torch.as_tensor(y_train).cpu(),
                          torch.as_tensor(F_test).cpu(), torch.as_tensor(y_test).cpu(), **probe_kwargs)
    return {**result, "readout": readout, "features": int(torch.as_tensor(F_train).shape[1])}


def probe(model, X_train, y_train, X_test, y_test, *, readout: str = PROBE_READOUT, k=None,
          **probe_kwargs) -> dict:
    """Features of both splits under ``readout`` (see :func:`features`), then the standardised
    linear probe: {accuracy, readout, features, train_accuracy, iterations, converged, ...}.
    probe_kwargs go to ``linear_probe`` (l2, max_iter, tol, backend)."""
    F_train = features(model, X_train, readout, k=k)
    F_test = features(model, X_test, readout, k=k)
    return probe_features(F_train, y_train, F_test, y_test, readout=readout, **probe_kwargs)


def readout_label(readout: str) -> str:
    """Words for a figure: ``linear probe, relu readout``."""
    return f"linear probe, {readout} readout"
