"""Recorder: the history of an Fp layer while it learns (thresholds, firing, weight snapshots),
kept in memory and, with a ``torch.utils.tensorboard.SummaryWriter``, written for TensorBoard."""
from __future__ import annotations

import math

import torch

from ..layers.base import FpLayer
from ..layers.linear import FpLinear


def _check_every(name: str, value, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}, got {value!r}")
    return value


def _stack(items: list) -> torch.Tensor:
    """Stacked on the CPU; an empty (0,) tensor before the first record."""
    return torch.stack(items).cpu() if items else torch.empty(0)


class Recorder:
    """Records an Fp layer every ``every`` learned samples: thresholds, firing counts, weights.

    A forward hook runs after each forward call of the layer. When the call carried
    ``layer.samples_seen`` (samples the layer learned from: all-zero samples, frozen and eval
    passes do not count) past a multiple of ``every``, it records once, at the count after the
    call. So records land exactly on multiples of ``every`` when calls end there, which
    :meth:`feed` guarantees by cutting the input at those points; plain ``layer(x)`` calls with
    batches larger than ``every`` record once per call. The state at attach time is the first
    record (for FpConv2d, once its thresholds exist).

    neurons: indices of the neurons whose thresholds are kept (all by default); firing counts are
    kept for all. snapshot_every: samples between weight snapshots of all neurons (None: none);
    a snapshot costs N x D numbers, so keep it coarse for large layers.

    writer: a ``torch.utils.tensorboard.SummaryWriter`` (needs the ``tensorboard`` package); every
    record is also written there, at global step = samples seen, under ``tag/``: scalars
    ``samples_seen``, ``fired_share`` (share of neurons that fired so far), ``active`` (neurons that
    fired since the previous record), ``firings`` (firings since then); histograms ``threshold``
    and ``fire_count``; and at each weight snapshot the image ``weights`` (every neuron's weights
    as a tile, as ``fpwb.viz.plots.weight_grid`` draws them) and the scalar ``redundant_pairs``
    (``fpwb.evaluation.diagnostics.redundancy``). :meth:`write_hparams` adds the layer's
    hyper-parameters with final metrics (TensorBoard's HParams view). The writer is flushed on
    :meth:`close`, not closed: it is the caller's.

    Recorded data (CPU tensors, T records, U snapshots): ``samples`` (T,), ``thresholds``
    (T, S) or (T, S, H_out, W_out) for FpConv2d, ``fire_counts`` (T, N) cumulative, ``active``
    (T,) neurons that fired since the previous record, ``firings`` (T,) firings since the previous
    record, ``snapshot_samples`` (U,), ``weights`` (U, N, ...).
    """

    def __init__(self, layer: FpLayer, every: int = 100, *, neurons=None, snapshot_every: int | None = 1000,
                 writer=None, tag: str = "frontprop"):
        if not isinstance(layer, FpLayer):
            raise ValueError(f"Recorder attaches to an FpLinear or FpConv2d, got {type(layer).__name__}")
        self.layer = layer
        self.every = _check_every("every", every)
        self.snapshot_every = _check_every("snapshot_every", snapshot_every, allow_none=True)
        n = layer.weight.shape[0]
        if neurons is not None:
            neurons = torch.as_tensor(neurons, dtype=torch.long).flatten()
            if neurons.numel() == 0 or bool((neurons < 0).any()) or bool((neurons >= n).any()):
                raise ValueError(f"neurons must be indices in [0, {n}), got {neurons.tolist()}")
        self.neurons = neurons
        if writer is not None and not all(hasattr(writer, m) for m in ("add_scalar", "add_histogram", "add_image")):
            raise ValueError(f"writer must be a torch.utils.tensorboard.SummaryWriter, got {type(writer).__name__}")
        if not isinstance(tag, str) or not tag:
            raise ValueError(f"tag must be a non-empty string, got {tag!r}")
        self.writer, self.tag = writer, tag
        self._samples, self._thresholds, self._fire_counts = [], [], []
        self._snapshot_samples, self._weights = [], []
        self._base_count = layer.fire_count.clone()  # (N,) counts before the first record
        self._last, self._last_snapshot = None, None
        self._handle = layer.register_forward_hook(self._hook)
        self._maybe_record(force=True)

    @property
    def attached(self) -> bool:
        return self._handle is not None

    def close(self):
        """Remove the hook: the layer runs as before and nothing more is recorded."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if self.writer is not None:
            self.writer.flush()

    detach = close

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _hook(self, module, args, output):
        self._maybe_record()

    def _maybe_record(self, force: bool = False):
        layer = self.layer
        seen = int(layer.samples_seen)
        if layer.threshold is not None and (
                force or self._last is None or seen // self.every > self._last // self.every):
            threshold = layer.threshold if self.neurons is None else layer.threshold[self.neurons]
            self._samples.append(seen)
            self._thresholds.append(threshold.clone())
            self._fire_counts.append(layer.fire_count.clone())
            self._last = seen
            if self.writer is not None:
                self._write_record(seen, threshold)
        if self.snapshot_every is not None and (
                force or self._last_snapshot is None
                or seen // self.snapshot_every > self._last_snapshot // self.snapshot_every):
            self._snapshot_samples.append(seen)
            self._weights.append(layer.weight.clone())
            self._last_snapshot = seen
            if self.writer is not None:
                self._write_snapshot(seen)

    def _write_record(self, seen: int, threshold: torch.Tensor):
        counts = self.layer.fire_count
        previous = self._fire_counts[-2] if len(self._fire_counts) > 1 else self._base_count
        since = counts - previous.to(counts)
        tag, w = self.tag, self.writer
        w.add_scalar(f"{tag}/samples_seen", seen, seen)
        w.add_scalar(f"{tag}/fired_share", float((counts > 0).float().mean()), seen)
        w.add_scalar(f"{tag}/active", int((since > 0).sum()), seen)
        w.add_scalar(f"{tag}/firings", int(since.sum()), seen)
        w.add_histogram(f"{tag}/threshold", threshold.detach().float().cpu(), seen)
        w.add_histogram(f"{tag}/fire_count", counts.float().cpu(), seen)

    def _write_snapshot(self, seen: int):
        from ..evaluation.diagnostics import redundancy
        from . import plots

        mosaic, lim = plots.weight_mosaic(plots.weight_tiles(self.layer.weight.detach().cpu(), self._image_shape()))
        if mosaic.ndim == 2:  # grey tiles: the weight colour map, padding grey
            mosaic = plots.WEIGHT_CMAP((mosaic + lim) / (2 * lim))[..., :3]
        self.writer.add_image(f"{self.tag}/weights", mosaic, seen, dataformats="HWC")
        self.writer.add_scalar(f"{self.tag}/redundant_pairs", redundancy(self.layer)["pairs"], seen)

    def _image_shape(self):
        """An FpLinear's rows as square images when they are; else one row per neuron."""
        if not isinstance(self.layer, FpLinear):
            return None
        d = self.layer.weight.shape[1]
        for channels in (1, 3):
            side = math.isqrt(d // channels)
            if channels * side * side == d:
                return None
        return (1, d)

    def hparams(self) -> dict:
        """The layer's hyper-parameters as TensorBoard takes them (numbers, strings, booleans)."""
        layer = self.layer
        values = {"layer": type(layer).__name__, "neurons": int(layer.weight.shape[0]),
                  "inputs": int(layer.weight[0].numel())}
        for name in ("w_boost", "t_decay", "mode", "rule", "k_winners", "k_output", "repulsion",
                     "repulsion_cosine", "normalize_output"):
            if hasattr(layer, name):
                value = getattr(layer, name)
                values[name] = value if isinstance(value, (bool, int, float, str)) else str(value)
        return values

    def write_hparams(self, metrics: dict | None = None, hparams: dict | None = None):
        """Write the layer's hyper-parameters (:meth:`hparams`, updated by ``hparams``) with final
        ``metrics`` (name -> number; by default the fired share and samples seen) into the writer's
        run, for TensorBoard's HParams view."""
        if self.writer is None:
            raise ValueError("this Recorder has no writer: pass writer=SummaryWriter(...)")
        counts = self.layer.fire_count
        metrics = dict(metrics) if metrics is not None else {
            f"{self.tag}/final_fired_share": float((counts > 0).float().mean()),
            f"{self.tag}/final_samples_seen": int(self.layer.samples_seen)}
        bad = {k: v for k, v in metrics.items() if isinstance(v, bool) or not isinstance(v, (int, float))}
        if bad:
            raise ValueError(f"metrics must be numbers, got {bad}")
        self.writer.add_hparams({**self.hparams(), **(hparams or {})}, metrics, run_name=".")
        self.writer.flush()

    def feed(self, x: torch.Tensor, batch_size: int = 256):
        """Train the layer on x in order, in calls of at most batch_size samples that end at every
        multiple of ``every``, so each record lands exactly on one. Images (B, C, H, W) are
        flattened for an FpLinear. Outputs are not kept: call the layer for those."""
        _check_every("batch_size", batch_size)
        layer = self.layer
        if not layer.learning:
            raise ValueError("the layer is not learning (eval() or frozen): feed would record nothing; "
                             "call layer.train() / layer.unfreeze() first")
        if not self.attached:
            raise ValueError("this Recorder is closed; make a new one to record again")
        if isinstance(layer, FpLinear) and isinstance(x, torch.Tensor) and x.dim() > 2:
            x = x.flatten(1)
        start = 0
        while start < len(x):
            to_record = self.every - int(layer.samples_seen) % self.every
            stop = min(start + batch_size, start + to_record, len(x))
            layer(x[start:stop])
            start = stop

    @property
    def samples(self) -> torch.Tensor:
        return torch.tensor(self._samples, dtype=torch.long)

    @property
    def thresholds(self) -> torch.Tensor:
        return _stack(self._thresholds)

    @property
    def fire_counts(self) -> torch.Tensor:
        return _stack(self._fire_counts)

    def _per_interval(self) -> torch.Tensor:
        """Firings of each neuron since the previous record.  # (T, N)"""
        counts = self.fire_counts
        if not len(counts):
            return counts
        return counts.diff(dim=0, prepend=self._base_count.cpu().unsqueeze(0))

    @property
    def active(self) -> torch.Tensor:
        return (self._per_interval() > 0).sum(dim=1) if self._samples else torch.empty(0, dtype=torch.long)

    @property
    def firings(self) -> torch.Tensor:
        return self._per_interval().sum(dim=1) if self._samples else torch.empty(0, dtype=torch.long)

    @property
    def snapshot_samples(self) -> torch.Tensor:
        return torch.tensor(self._snapshot_samples, dtype=torch.long)

    @property
    def weights(self) -> torch.Tensor:
        return _stack(self._weights)

    def __len__(self) -> int:
        return len(self._samples)

    def __repr__(self) -> str:
        neurons = "all" if self.neurons is None else f"{self.neurons.numel()} chosen"
        state = "attached" if self.attached else "closed"
        return (f"Recorder({type(self.layer).__name__}, every={self.every}, neurons={neurons}, "
                f"snapshot_every={self.snapshot_every}, records={len(self)}, "
                f"snapshots={len(self._weights)}, {state})")
