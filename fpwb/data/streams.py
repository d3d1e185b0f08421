"""Ways to feed a data set to a layer: flattened, in seeded mini-batches, or as continual-learning tasks."""
from __future__ import annotations

from typing import NamedTuple

import torch


def flatten(X: torch.Tensor) -> torch.Tensor:
    """Images (N, C, H, W), or any (N, ...), as rows (N, C*H*W)."""
    if not isinstance(X, torch.Tensor) or X.dim() < 1:
        raise ValueError(f"flatten expects a tensor (N, ...), got {getattr(X, 'shape', type(X))}")
    return X.reshape(len(X), -1)


def _check_pair(X, y):
    if not isinstance(X, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError("X and y must be torch tensors")
    if y.dim() != 1 or len(X) != len(y):
        raise ValueError(f"expected X (N, ...) and labels y (N,), got {tuple(X.shape)} and {tuple(y.shape)}")


class Batches:
    """Mini-batches (x (b, ...), y (b,)) over X and y, ``epochs`` times over.

    shuffle: a new permutation each epoch, drawn from a generator seeded by ``seed``, so the same
    seed gives the same stream every time it is iterated. Otherwise the data's own order.
    drop_last: skip each epoch's last batch when it is smaller than batch_size. ``len()`` is the
    number of batches (for progress bars).
    """

    def __init__(self, X, y, batch_size: int = 256, *, shuffle: bool = True, seed: int = 0,
                 epochs: int = 1, drop_last: bool = False):
        _check_pair(X, y)
        for name, value in (("batch_size", batch_size), ("epochs", epochs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.X, self.y = X, y
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.epochs, self.drop_last = epochs, drop_last

    def __len__(self) -> int:
        n, b = len(self.X), self.batch_size
        return self.epochs * (n // b if self.drop_last else -(-n // b))

    def __iter__(self):
        n, b = len(self.X), self.batch_size
        generator = torch.Generator().manual_seed(self.seed)
        stop = n - n % b if self.drop_last else n
        for _ in range(self.epochs):
            order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
            for start in range(0, stop, b):
                index = order[start:start + b]
                yield self.X[index], self.y[index]


class Task(NamedTuple):
    """One task of a continual-learning sequence."""
    name: str
    X: torch.Tensor
    y: torch.Tensor
    classes: tuple  # the labels this task holds
    permutation: torch.Tensor | None  # (H*W,) pixel order of a permuted task, else None


def class_incremental(X, y, tasks=2) -> list[Task]:
    """Split (X, y) by class: task t holds only the samples of its classes, in their original order.

    tasks: an int splits the sorted classes present into that many consecutive groups of (nearly)
    equal size (2 on ten classes: 0-4, then 5-9); or give the groups, e.g. ((0, 1), (2, 3)).
    """
    _check_pair(X, y)
    present = sorted(torch.unique(y).tolist())
    if isinstance(tasks, int) and not isinstance(tasks, bool):
        if not 1 <= tasks <= len(present):
            raise ValueError(f"tasks must be between 1 and the {len(present)} classes present, got {tasks}")
        groups = [tuple(int(c) for c in chunk) for chunk in torch.tensor(present).tensor_split(tasks)]
    else:
        groups = [tuple(int(c) for c in group) for group in tasks]
        flat = [c for group in groups for c in group]
        if not groups or not all(groups) or len(set(flat)) != len(flat):
            raise ValueError(f"tasks must be non-empty groups of distinct classes, got {tasks!r}")
        missing = sorted(set(flat) - set(present))
        if missing:
            raise ValueError(f"classes {missing} have no samples; present: {present}")
    out = []
    for group in groups:
        keep = torch.isin(y, torch.tensor(group, dtype=y.dtype))
        name = f"classes {group[0]}-{group[-1]}" if group == tuple(range(group[0], group[-1] + 1)) \
            else "classes " + ",".join(map(str, group))
        out.append(Task(name, X[keep], y[keep], group, None))
    return out


def pixel_permutations(n_tasks: int, n_pixels: int, seed: int = 0, identity_first: bool = True):
    """n_tasks permutations of n_pixels positions (n_tasks, n_pixels); the same seed gives the same ones."""
    if isinstance(n_tasks, bool) or not isinstance(n_tasks, int) or n_tasks < 1:
        raise ValueError(f"n_tasks must be a positive int, got {n_tasks!r}")
    generator = torch.Generator().manual_seed(seed)
    perms = [torch.randperm(n_pixels, generator=generator) for _ in range(n_tasks)]
    if identity_first:
        perms[0] = torch.arange(n_pixels)
    return torch.stack(perms)


def permuted_tasks(X, y, n_tasks: int, seed: int = 0, identity_first: bool = True) -> list[Task]:
    """Permuted-pixel tasks: task t shows every image (N, C, H, W) with its H*W pixel positions in
    a fixed random order (the same for all channels); labels unchanged.

    The permutations depend only on (n_tasks, H*W, seed, identity_first): call it on the train and
    the test split with the same seed to get matching tasks. identity_first: task 0 is the
    original data.
    """
    _check_pair(X, y)
    if X.dim() != 4:
        raise ValueError(f"permuted_tasks expects images (N, C, H, W), got {tuple(X.shape)}")
    N, C, H, W = X.shape
    perms = pixel_permutations(n_tasks, H * W, seed, identity_first)
    classes = tuple(sorted(torch.unique(y).tolist()))
    flat = X.reshape(N, C, H * W)
    return [Task(f"permutation {t}", flat[:, :, perm].reshape(N, C, H, W), y, classes, perm)
            for t, perm in enumerate(perms)]


def choose_dataset(preferred: str = "fashion_mnist", fallback: str = "digits", root="data",
                   verbose: bool = True) -> str:
    """The data set to run on: ``preferred`` when its files are on this machine (nothing is
    downloaded), else ``fallback`` (digits ships with scikit-learn, so it is always there).
    verbose: say so when falling back."""
    from .datasets import DatasetCorruptError, DatasetNotFoundError, load

    if preferred == fallback:
        return preferred
    try:
        load(preferred, "test", root, download=False)
    except (DatasetNotFoundError, DatasetCorruptError) as err:
        if verbose:
            print(f"{preferred} is not on this machine ({str(err).splitlines()[0]}); using {fallback}")
        return fallback
    return preferred


def train_test(name: str, *, max_train: int | None = None, max_test: int | None = None, root="data"):
    """(X_train, y_train, X_test, y_test) of a data set: its first ``max_train`` training and
    ``max_test`` test samples (None: all), images (n, C, H, W) as ``fpwb.data.load`` gives them."""
    from .datasets import load

    for label, value in (("max_train", max_train), ("max_test", max_test)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{label} must be a positive int or None, got {value!r}")
    (X_train, y_train), (X_test, y_test) = load(name, "train", root), load(name, "test", root)
    return X_train[:max_train], y_train[:max_train], X_test[:max_test], y_test[:max_test]
