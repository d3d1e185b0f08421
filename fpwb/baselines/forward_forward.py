"""Forward-Forward (Hinton 2022), the supervised variant with the label in the input: a baseline of
another local, forward-only rule, probed with the same protocol as Frontprop.

Each layer is ``h = relu(W x / ||x|| + b)`` (the input scaled to unit length, so a layer can only
pass on the *direction* of the activity below it, not its size). A layer's goodness is the mean of
h squared. Positive data: an image with its own label code appended (``fpwb.studies.labels.LabelCode``,
one-hot, absolute values); negative data: the same image with a wrong label (drawn at random, or
the wrong label the network currently likes best with ``hard_negatives``). Each layer minimises,
on its own and with no gradient crossing layers,

    softplus(-(g_pos - theta)) + softplus(g_neg - theta)

so that its goodness is above ``theta`` for positive and below it for negative data. Layers learn
together on each mini-batch, each from the (detached) output of the one below.

Classifying: append each label in turn, sum the goodness of every layer, take the best label
(``predict``). Features for a probe: the activities of all layers for the image with a *neutral*
label (every class at 1/n_classes), concatenated (``features``); ``forward_forward`` trains one on
(X, y), in the style of ``fpwb.baselines``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..data import flatten
from ..studies.labels import LabelCode


class FFLayer(nn.Module):
    """One Forward-Forward layer: relu(Linear(x / ||x||))."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x):
        return torch.relu(self.linear(x / (x.norm(dim=1, keepdim=True) + 1e-4)))

    @staticmethod
    def goodness(h):
        return h.square().mean(1)


class ForwardForward(nn.Module):
    """A stack of FFLayer over inputs of in_features values plus a label code of n_classes.

    widths: the layers' sizes (the seed's comparison: two layers of the same width). threshold:
    theta of the loss. label_value: the code's lit value (images in [0, 1]: 1, as bright as the
    brightest pixel). lr: Adam, one optimiser per layer. Defaults (theta 0.5, lr 0.03, 30 epochs
    of mini-batches of 64) were picked on digits, where they reach ~93% test accuracy with
    ``predict``; with theta 2.0 (the common PyTorch port) learning stalls for the first epochs.
    """

    def __init__(self, in_features: int, n_classes: int, widths=(256, 256), *, threshold: float = 0.5,
                 label_value: float = 1.0, lr: float = 0.03, seed: int = 0):
        super().__init__()
        if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
            raise ValueError(f"widths must be positive ints, got {widths!r}")
        torch.manual_seed(seed)
        self.code = LabelCode(n_classes, strength=label_value, relative=False)
        self.in_features, self.n_classes, self.threshold = in_features, n_classes, threshold
        sizes = [in_features + self.code.width, *widths]
        self.layers = nn.ModuleList(FFLayer(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.optimizers = [torch.optim.Adam(layer.parameters(), lr=lr) for layer in self.layers]
        self.seed = seed
        self.history: list[float] = []  # mean loss (summed over layers) of each epoch

    def _rows(self, X):
        X = flatten(torch.as_tensor(X)).float()
        if X.shape[1] != self.in_features:
            raise ValueError(f"expected {self.in_features} input values per sample, got {X.shape[1]}")
        return X

    def with_label(self, X, y) -> torch.Tensor:
        """Rows (n, D + n_classes): the samples with the code of labels y (n,) appended."""
        return self.code.encode(self._rows(X), y)

    def neutral(self, X) -> torch.Tensor:
        """Rows with the neutral code appended: every class at label_value / n_classes."""
        X = self._rows(X)
        return torch.cat([X, X.new_full((len(X), self.code.width), self.code.strength / self.n_classes)], 1)

    def activities(self, x) -> list[torch.Tensor]:
        """Each layer's output for coded rows x (n, D + n_classes)."""
        out = []
        for layer in self.layers:
            x = layer(x)
            out.append(x)
        return out

    @torch.no_grad()
    def label_goodness(self, X, batch_size: int = 2048) -> torch.Tensor:
        """Goodness summed over the layers for each sample with each label: (n, n_classes)."""
        X = self._rows(X)
        scores = []
        for start in range(0, len(X), batch_size):
            xb = X[start:start + batch_size]
            per_label = []
            for c in range(self.n_classes):
                coded = self.code.encode(xb, torch.full((len(xb),), c, dtype=torch.long))
                per_label.append(sum(FFLayer.goodness(h) for h in self.activities(coded)))
            scores.append(torch.stack(per_label, 1))
        return torch.cat(scores)

    def predict(self, X) -> torch.Tensor:
        """The label with the highest total goodness: (n,)."""
        return self.label_goodness(X).argmax(1)

    @torch.no_grad()
    def features(self, X, batch_size: int = 2048) -> torch.Tensor:
        """The activities of all layers for the samples with the neutral label, concatenated:
        (n, sum(widths))."""
        X = self._rows(X)
        return torch.cat([torch.cat(self.activities(self.neutral(X[s:s + batch_size])), 1)
                          for s in range(0, len(X), batch_size)])

    def _negatives(self, X, y, generator, hard):
        if hard:
            scores = self.label_goodness(X)
            scores[torch.arange(len(y)), y] = -float("inf")
            return scores.argmax(1)
        shift = torch.randint(1, self.n_classes, (len(y),), generator=generator)
        return (y + shift) % self.n_classes

    def fit(self, X, y, *, epochs: int = 30, batch_size: int = 64, hard_negatives: bool = False):
        """Train on (X (n, ...), y (n,)) for ``epochs`` passes in seeded shuffled mini-batches."""
        X = self._rows(X)
        y = torch.as_tensor(y).long()
        if len(y) != len(X):
            raise ValueError(f"{len(X)} samples but {len(y)} labels")
        generator = torch.Generator().manual_seed(self.seed)
        self.train()
        for _ in range(epochs):
            order = torch.randperm(len(X), generator=generator)
            total = 0.0
            for start in range(0, len(X), batch_size):
                index = order[start:start + batch_size]
                xb, yb = X[index], y[index]
                pos = self.code.encode(xb, yb)
                neg = self.code.encode(xb, self._negatives(xb, yb, generator, hard_negatives))
                for layer, optimizer in zip(self.layers, self.optimizers):
                    h_pos, h_neg = layer(pos), layer(neg)
                    loss = torch.nn.functional.softplus(torch.cat([
                        self.threshold - FFLayer.goodness(h_pos),
                        FFLayer.goodness(h_neg) - self.threshold])).mean()
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    total += float(loss.detach()) * len(index)
                    pos, neg = h_pos.detach(), h_neg.detach()
            self.history.append(total / len(X))
        return self


def forward_forward(X, y, n_neurons: int, seed: int = 0, *, n_classes: int | None = None,
                    epochs: int = 30, layers: int = 2, **kwargs) -> ForwardForward:
    """A ForwardForward of ``layers`` layers of n_neurons each, trained on (X, y).

    X: (n, ...) images or rows in [0, 1]; y: (n,) labels 0..n_classes-1 (n_classes: max(y) + 1
    unless given). kwargs: ForwardForward's (threshold, lr, label_value) and fit's (batch_size,
    hard_negatives). Probe it with ``model.features(X)``; classify with ``model.predict(X)``.
    """
    if isinstance(n_neurons, bool) or not isinstance(n_neurons, int) or n_neurons < 1:
        raise ValueError(f"n_neurons must be a positive int, got {n_neurons!r}")
    y = torch.as_tensor(y).long()
    n_classes = int(y.max()) + 1 if n_classes is None else n_classes
    fit_kwargs = {k: kwargs.pop(k) for k in ("batch_size", "hard_negatives") if k in kwargs}
    model = ForwardForward(flatten(torch.as_tensor(X)).shape[1], n_classes, (n_neurons,) * layers,
                           seed=seed, **kwargs)
    return model.fit(X, y, epochs=epochs, **fit_kwargs)
