"""Continual learning and distribution shift: learners that see tasks in sequence, measured by probes.

Three unsupervised learners share one small interface (``learn(X)`` on a task's training images,
no labels; ``features(X)`` with the current state, no learning):

- ``FrontpropLearner``: an FpLinear, fed the task in seeded shuffled order (``epochs`` passes).
- ``KMeansLearner``: online k-means (scikit-learn's ``MiniBatchKMeans.partial_fit``) on the
  unit-length inputs; features as ``fpwb.baselines.kmeans_layer`` gives them (cosine to each
  centroid, ``relu`` readout by default).
- ``AutoencoderLearner``: the backprop reference, a one-hidden-layer autoencoder
  (Linear + ReLU, Linear) trained with Adam on the mean squared reconstruction error of each task
  in turn; its code (the hidden layer) is the features.

``accuracy_matrix`` trains a learner task after task and, after each task, fits a fresh linear
probe (``fpwb.evaluation.probes.linear_probe``) per task on that task's training features and scores it on
its test features: ``A[i, j]`` = probe accuracy on task j after learning tasks 0..i. Refitting the
probe measures what the *representation* still holds about old tasks (representation forgetting);
no classifier is carried across tasks. ``forgetting`` reads the usual numbers off that matrix.

``adaptation_curve`` measures how fast a learner follows an abrupt shift: it learns task ``before``
fully, then the new task in small slices, and after each slice scores the probe on both.
"""
from __future__ import annotations

import time

import torch

from ..layers.base import unit_rows
from ..data import flatten
from ..layers.linear import FpLinear
from ..evaluation import diagnostics
from ..evaluation.probes import READOUTS, embed
from ..evaluation.protocol import fit, probe_features


def _rows(X) -> torch.Tensor:
    if not isinstance(X, torch.Tensor) or X.dim() < 2 or len(X) == 0:
        raise ValueError(f"expected a non-empty tensor of samples (n, ...), got {getattr(X, 'shape', type(X))}")
    return flatten(X).float()


def _order(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


class FrontpropLearner:
    """An FpLinear(in_features, n_neurons) that learns each task ``epochs`` times in shuffled order.

    Extra keyword arguments go to FpLinear (w_boost, t_decay, mode, ...). ``readout``: the
    features ``fpwb.evaluation.probes.embed`` gives (``relu`` default; ``fired`` is the layer's own output).
    Each pass is ``fpwb.evaluation.protocol.fit`` in a new seeded order; ``learned_share`` is the
    share of neurons whose weights moved from their values at construction.
    """

    name = "frontprop"

    def __init__(self, in_features: int, n_neurons: int, *, epochs: int = 1, readout: str = "relu",
                 seed: int = 0, batch_size: int = 1024, **layer_kwargs):
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        self.layer = FpLinear(in_features, n_neurons, seed=seed, **layer_kwargs)
        self.initial_weight = self.layer.weight.detach().clone()
        self.epochs, self.readout, self.seed, self.batch_size = epochs, readout, seed, batch_size
        self._calls = 0

    def learn(self, X) -> None:
        X = _rows(X)
        for _ in range(self.epochs):
            fit(self.layer, X, seed=self.seed * 7919 + self._calls, batch_size=self.batch_size,
                freeze=False, progress=False)
            self._calls += 1

    @property
    def learned_share(self) -> float:
        return diagnostics.learned_share(self.layer, self.initial_weight)

    def features(self, X) -> torch.Tensor:
        return embed(self.layer, _rows(X), readout=self.readout)


class KMeansLearner:
    """Online k-means: ``MiniBatchKMeans.partial_fit`` over each task's unit-length inputs, in
    shuffled mini-batches, ``epochs`` passes. Features: cosines to the centroids, ``relu`` readout."""

    name = "kmeans"

    def __init__(self, n_clusters: int, *, epochs: int = 1, batch_size: int = 256, seed: int = 0,
                 readout: str = "relu"):
        from sklearn.cluster import MiniBatchKMeans

        if readout not in ("relu", "topk", "linear"):
            raise ValueError(f"readout must be relu, topk or linear (k-means has no thresholds), got {readout!r}")
        self.kmeans = MiniBatchKMeans(n_clusters=n_clusters, batch_size=batch_size, random_state=seed,
                                      n_init=1)
        self.n_clusters, self.epochs, self.seed, self.readout = n_clusters, epochs, seed, readout
        self.batch_size = max(batch_size, n_clusters)  # partial_fit's first batch needs >= k samples
        self._calls = 0

    def learn(self, X) -> None:
        unit, _ = unit_rows(_rows(X))
        if not hasattr(self.kmeans, "cluster_centers_") and len(unit) < self.n_clusters:
            raise ValueError(f"the first task needs at least {self.n_clusters} samples, got {len(unit)}")
        for _ in range(self.epochs):
            order = _order(len(unit), self.seed * 7919 + self._calls)
            self._calls += 1
            for start in range(0, len(unit), self.batch_size):
                batch = unit[order[start:start + self.batch_size]]
                if len(batch) < self.n_clusters and not hasattr(self.kmeans, "cluster_centers_"):
                    continue
                self.kmeans.partial_fit(batch.numpy())

    def layer(self) -> FpLinear:
        """The centroids as a frozen FpLinear (``fpwb.baselines.layer_from_weights``)."""
        from ..baselines import layer_from_weights

        return layer_from_weights(torch.from_numpy(self.kmeans.cluster_centers_).float())

    def features(self, X) -> torch.Tensor:
        return embed(self.layer(), _rows(X), readout=self.readout)


class Autoencoder(torch.nn.Module):
    """x -> relu(W1 x + b1) -> W2 h + b2. ``encode`` gives the code h."""

    def __init__(self, in_features: int, n_hidden: int):
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(in_features, n_hidden), torch.nn.ReLU())
        self.decoder = torch.nn.Linear(n_hidden, in_features)

    def encode(self, x):
        return self.encoder(x)

    def forward(self, x):
        return self.decoder(self.encoder(x))


class AutoencoderLearner:
    """The backprop reference: an ``Autoencoder`` (in_features -> n_hidden -> in_features) trained
    with Adam (``lr``) on mean squared error over each task, ``epochs`` passes in shuffled
    mini-batches of ``batch_size``. Inputs: the flattened pixels as they are. Features: the code."""

    name = "autoencoder"

    def __init__(self, in_features: int, n_hidden: int, *, epochs: int = 1, lr: float = 1e-3,
                 batch_size: int = 64, seed: int = 0):
        torch.manual_seed(seed)
        self.model = Autoencoder(in_features, n_hidden)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.epochs, self.batch_size, self.seed = epochs, batch_size, seed
        self._calls = 0
        self.losses: list[float] = []  # mean loss of each learn() pass

    def learn(self, X) -> None:
        X = _rows(X)
        self.model.train()
        for _ in range(self.epochs):
            order = _order(len(X), self.seed * 7919 + self._calls)
            self._calls += 1
            total = 0.0
            for start in range(0, len(X), self.batch_size):
                xb = X[order[start:start + self.batch_size]]
                loss = torch.nn.functional.mse_loss(self.model(xb), xb)
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                total += float(loss.detach()) * len(xb)
            self.losses.append(total / len(X))

    def features(self, X) -> torch.Tensor:
        self.model.eval()
        with torch.no_grad():
            return self.model.encode(_rows(X))


def probe_task(learner, train_task, test_task, max_train: int | None = None) -> float:
    """Linear-probe accuracy on one task with the learner's current features (fit on the task's
    training split, at most max_train samples, scored on its test split)."""
    Xtr, ytr = train_task.X[:max_train], train_task.y[:max_train]
    return probe_features(learner.features(Xtr), ytr, learner.features(test_task.X), test_task.y,
                          readout=getattr(learner, "readout", "code"))["accuracy"]


def _union(tasks, max_per_task=None):
    """One Task holding the samples of several (the first max_per_task of each)."""
    from ..data import Task

    X = torch.cat([t.X[:max_per_task] for t in tasks])
    y = torch.cat([t.y[:max_per_task] for t in tasks])
    classes = tuple(c for t in tasks for c in t.classes)
    return Task(" + ".join(t.name for t in tasks), X, y, classes, None)


def accuracy_matrix(learner, train_tasks, test_tasks, *, max_probe_train: int | None = None,
                    progress=None) -> dict:
    """Learn train_tasks in order; after each, probe every task (also those still to come).

    train_tasks, test_tasks: matching lists of ``fpwb.data.Task`` (the same classes or
    permutation, from the train and the test split). Returns {matrix: (T, T) tensor, A[i, j] =
    probe accuracy on task j after learning tasks 0..i; initial: (T,) accuracies before any
    learning (NaN for online k-means, which has no centroids yet); seen: (T,) accuracy of one
    probe over all the classes of tasks 0..i together (fit on their training splits, each at
    most max_probe_train samples; NaN when that is a single class); seconds_learning;
    seconds_probing; names}. progress: called with (i, row) after
    each task.
    """
    if len(train_tasks) != len(test_tasks) or not train_tasks:
        raise ValueError(f"need as many test tasks as training tasks (> 0), got {len(train_tasks)} and {len(test_tasks)}")
    T = len(train_tasks)
    learn_s = probe_s = 0.0
    start = time.perf_counter()
    initial = torch.tensor([probe_task(learner, train_tasks[j], test_tasks[j], max_probe_train)
                            for j in range(T)]) if _has_state(learner) else torch.full((T,), float("nan"))
    probe_s += time.perf_counter() - start
    matrix = torch.zeros(T, T)
    seen = torch.zeros(T)
    for i, task in enumerate(train_tasks):
        start = time.perf_counter()
        learner.learn(task.X)
        learn_s += time.perf_counter() - start
        start = time.perf_counter()
        for j in range(T):
            matrix[i, j] = probe_task(learner, train_tasks[j], test_tasks[j], max_probe_train)
        if i > 0 or len(train_tasks[0].classes) > 1:
            seen[i] = probe_task(learner, _union(train_tasks[:i + 1], max_probe_train),
                                 _union(test_tasks[:i + 1]), None)
        else:
            seen[i] = float("nan")
        probe_s += time.perf_counter() - start
        if progress is not None:
            progress(i, matrix[i])
    return {"matrix": matrix, "initial": initial, "seen": seen, "seconds_learning": learn_s,
            "seconds_probing": probe_s, "names": [t.name for t in train_tasks]}


def _has_state(learner) -> bool:
    """Whether the learner has features before learning anything (k-means has no centroids yet)."""
    return not isinstance(learner, KMeansLearner) or hasattr(learner.kmeans, "cluster_centers_")


def forgetting(matrix) -> dict:
    """The usual continual-learning numbers from an accuracy matrix A (T, T) (rows: after task i,
    columns: task j).

    - ``average_accuracy[i]``: mean of A[i, j] over the tasks learned so far (j <= i);
    - ``forgetting[i, j]`` (j < i): the best accuracy task j ever had after it was learned, minus
      its accuracy now: max over k in [j, i) of A[k, j], minus A[i, j] (Chaudhry et al. 2018);
      NaN where undefined (j >= i);
    - ``average_forgetting[i]``: mean of forgetting[i, j] over j < i (NaN for i = 0);
    - ``final_average_accuracy``, ``final_forgetting``: those after the last task;
    - ``backward_transfer``: mean over j < T-1 of A[T-1, j] - A[j, j] (negative: forgetting).
    """
    A = torch.as_tensor(matrix, dtype=torch.float64)
    if A.dim() != 2 or A.shape[0] != A.shape[1] or len(A) == 0:
        raise ValueError(f"expected a square accuracy matrix (T, T), got {tuple(A.shape)}")
    T = len(A)
    avg = torch.stack([A[i, :i + 1].mean() for i in range(T)])
    forget = torch.full((T, T), float("nan"), dtype=torch.float64)
    for i in range(1, T):
        for j in range(i):
            forget[i, j] = A[j:i, j].max() - A[i, j]
    avg_forget = torch.tensor([float("nan")] + [float(forget[i, :i].mean()) for i in range(1, T)],
                              dtype=torch.float64)
    bwt = float((A[T - 1, :T - 1] - A.diagonal()[:T - 1]).mean()) if T > 1 else float("nan")
    return {"average_accuracy": avg, "forgetting": forget, "average_forgetting": avg_forget,
            "final_average_accuracy": float(avg[-1]), "final_forgetting": float(avg_forget[-1]),
            "backward_transfer": bwt}


def adaptation_curve(learner, before, after, before_test, after_test, *, slice_size: int = 250,
                     n_slices: int | None = None, max_probe_train: int | None = 2000) -> dict:
    """Learn ``before`` (a Task, fully), then ``after`` in slices of ``slice_size`` samples; after
    each slice, probe both tasks.

    Returns {samples: (S+1,) samples of the new task seen (0 = right at the shift), new: probe
    accuracy on ``after`` at those points, old: on ``before``, new_final, samples_to_90: the
    first sample count where the new task's accuracy reached 90% of the way from its value at
    the shift to its best value (None when it never moved)}. For a FrontpropLearner also
    ``silent``: the share of each slice's samples that fired no neuron while learning (the layer
    meeting inputs it has no neuron for).
    """
    learner.learn(before.X)
    X_new = _rows(after.X)
    n = len(X_new) if n_slices is None else min(len(X_new), n_slices * slice_size)
    order = _order(len(X_new), 12345)[:n]
    samples, new, old, silent = [0], [], [], []

    def score():
        new.append(probe_task(learner, after, after_test, max_probe_train))
        old.append(probe_task(learner, before, before_test, max_probe_train))

    score()
    for start in range(0, n, slice_size):
        chunk = X_new[order[start:start + slice_size]]
        if isinstance(learner, FrontpropLearner):
            layer = learner.layer
            fired = layer(chunk)  # one pass over the slice in this order, learning
            silent.append(float((fired == 0).all(1).float().mean()))
        else:
            epochs, learner.epochs = learner.epochs, 1
            try:
                learner.learn(chunk)
            finally:
                learner.epochs = epochs
        samples.append(start + len(chunk))
        score()
    new_t = torch.tensor(new)
    gain = float(new_t.max() - new_t[0])
    reached = None
    if gain > 0:
        hit = (new_t >= new_t[0] + 0.9 * gain).nonzero()
        reached = samples[int(hit[0])]
    out = {"samples": samples, "new": new, "old": old, "new_final": new[-1], "samples_to_90": reached}
    if isinstance(learner, FrontpropLearner):
        out["silent"] = silent
    return out
