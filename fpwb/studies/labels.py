"""Labels in the input: append a label code to each sample while a layer learns, a blank one at test.

The upstream sandpit drew a label row under each image, so the neurons that learn an image learn
its label with it. Here the code is a block of ``n_classes * repeat`` values appended to the
flattened sample: ``repeat`` copies of a one-hot vector, scaled so that the code's length is
``strength`` times the sample's own length (so the label weighs the same against every image,
whatever its brightness; ``strength=1``: label and image count equally in the cosine a neuron
sees). At test time the code is blank (all zeros): the layer sees the image alone.

Two uses:

- probe the layer's features on blank-coded images (did learning with labels make better
  features?);
- read the label back from the neurons (``read_labels``): each neuron's weights hold a label part;
  a sample's response (its features) weighs those label parts, and the largest class wins. The
  layer becomes a classifier by itself, with no probe trained.

>>> code = LabelCode(n_classes=10, repeat=2, strength=0.5)
>>> X_learn = code.encode(X, y)      # (n, D + 20): image, then its label
>>> X_test = code.blank(X_test)      # (n, D + 20): image, then zeros
>>> predicted = read_labels(layer, X_test, code)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data import flatten


@dataclass(frozen=True)
class LabelCode:
    """How labels are written into samples: ``n_classes`` one-hot blocks of ``repeat`` values each,
    of total length ``strength`` times the sample's length (``relative=True``) or ``strength``
    itself (``relative=False``)."""

    n_classes: int
    repeat: int = 1
    strength: float = 1.0
    relative: bool = True

    def __post_init__(self):
        for name in ("n_classes", "repeat"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be at least 2, got {self.n_classes}")
        if not (isinstance(self.strength, (int, float)) and self.strength >= 0):
            raise ValueError(f"strength must be a number >= 0, got {self.strength!r}")

    @property
    def width(self) -> int:
        """Length of the appended code: n_classes * repeat."""
        return self.n_classes * self.repeat

    def codes(self, y, scale=None) -> torch.Tensor:
        """The code rows (n, width) for labels y (n,): block y lit, length ``scale`` (default 1)."""
        y = torch.as_tensor(y).long()
        if y.dim() != 1:
            raise ValueError(f"labels must be (n,), got {tuple(y.shape)}")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.n_classes):
            raise ValueError(f"labels must lie in [0, {self.n_classes}), got [{int(y.min())}, {int(y.max())}]")
        one_hot = torch.nn.functional.one_hot(y, self.n_classes).float()  # (n, C)
        code = one_hot.repeat_interleave(self.repeat, dim=1) / self.repeat ** 0.5  # unit length
        return code if scale is None else code * scale.view(-1, 1)

    def _scale(self, X: torch.Tensor) -> torch.Tensor:
        if self.relative:
            return self.strength * X.norm(dim=1)
        return torch.full((len(X),), float(self.strength), dtype=X.dtype)

    def encode(self, X, y) -> torch.Tensor:
        """Samples (n, ...) flattened, with the code of their labels y (n,) appended: (n, D + width)."""
        X = _rows(X)
        y = torch.as_tensor(y)
        if len(y) != len(X):
            raise ValueError(f"{len(X)} samples but {len(y)} labels")
        return torch.cat([X, self.codes(y, self._scale(X)).to(X)], dim=1)

    def blank(self, X) -> torch.Tensor:
        """Samples (n, ...) flattened, with a blank (all-zero) code appended: (n, D + width)."""
        X = _rows(X)
        return torch.cat([X, X.new_zeros(len(X), self.width)], dim=1)

    def split(self, rows) -> tuple[torch.Tensor, torch.Tensor]:
        """(sample part (n, D), code part (n, width)) of coded rows (n, D + width) or weights."""
        rows = torch.as_tensor(rows)
        if rows.shape[-1] <= self.width:
            raise ValueError(f"rows of length {rows.shape[-1]} hold no sample before a code of {self.width}")
        return rows[..., :-self.width], rows[..., -self.width:]

    def decode(self, code) -> torch.Tensor:
        """Class scores (n, n_classes) of code parts (n, width): each block's sum."""
        code = torch.as_tensor(code)
        if code.shape[-1] != self.width:
            raise ValueError(f"code parts must have {self.width} values, got {code.shape[-1]}")
        return code.reshape(*code.shape[:-1], self.n_classes, self.repeat).sum(-1)


def _rows(X) -> torch.Tensor:
    if not isinstance(X, torch.Tensor) or X.dim() < 2:
        raise ValueError(f"expected samples (n, ...), got {getattr(X, 'shape', type(X))}")
    return flatten(X).float()


def neuron_labels(layer, code: LabelCode) -> torch.Tensor:
    """The class each neuron's weights hold in their label part (N,); -1 where that part is
    non-positive everywhere (a neuron that never learned a coded sample)."""
    _, part = code.split(layer.weight.reshape(len(layer.weight), -1))
    scores = code.decode(part)  # (N, C)
    best = scores.argmax(1)
    return torch.where(scores.max(1).values > 0, best, torch.full_like(best, -1))


def label_scores(layer, X_blank, code: LabelCode, readout: str = "topk", k=None) -> torch.Tensor:
    """Class scores (n, n_classes) the layer itself gives blank-coded samples: the features of each
    sample (``fpwb.evaluation.probes.embed`` with ``readout``) weigh each neuron's label part (its weights'
    code block, positive part), summed per class. Nothing is trained; the layer is unchanged.

    The default ``topk`` readout lets only the best-matching 10% of the neurons vote (``k=1``: the
    nearest neuron alone). ``relu`` lets every positively aligned neuron vote and blurs the
    answer; ``fired`` needs thresholds that blank-coded samples rarely reach when the layer
    learned with a strong code (its thresholds were set on image + label)."""
    from ..evaluation.probes import embed

    features = embed(layer, X_blank, readout=readout, k=k)  # (n, N)
    _, part = code.split(layer.weight.reshape(len(layer.weight), -1))
    return features @ code.decode(part.clamp_min(0))  # (n, N) @ (N, C)


def read_labels(layer, X_blank, code: LabelCode, readout: str = "topk", k=None) -> torch.Tensor:
    """Labels (n,) read back from the neurons: argmax of ``label_scores``."""
    return label_scores(layer, X_blank, code, readout, k).argmax(1)
