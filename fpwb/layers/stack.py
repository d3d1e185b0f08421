"""FpStack: Frontprop layers stacked with plain torch modules (pooling, normalisation, ...) in between.

Every Fp layer learns from what the modules before it give it. Two schedules:

- ``"joint"``: one forward pass over a batch trains every Fp layer at once; layer i+1 learns on
  the output of layer i as layer i left it after learning on that same batch. Modules with
  statistics (batch norm, ``fpwb.nets`` standardisation and whitening) collect them in the same
  passes (training mode).
- ``"greedy"``: layer by layer. Before each Fp layer learns, the modules with statistics between
  the previous Fp layer and it collect them in one pass over the data in data order (training
  mode, everything before them in eval mode); then the Fp layer learns for ``epochs`` shuffled
  passes with every other module in eval mode (fixed), nothing after it run. After the last Fp
  layer, the modules with statistics behind it collect theirs in one more pass.

A module counts as an Fp layer when it is an ``FpLayer`` or wraps one in its ``layer`` attribute
(``fpwb.nets.Readout``: an Fp layer read out through its cosines). Every module's output can be
read (``outputs``), and ``embed`` gives the features of any stage for a probe, without learning.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import FpLayer
from .conv import FpConv2d
from .linear import FpLinear

SCHEDULES = ("joint", "greedy")


def fp_layer_of(module: nn.Module) -> FpLayer | None:
    """The Fp layer a stack module is, or wraps in its ``layer`` attribute; None for other modules."""
    if isinstance(module, FpLayer):
        return module
    inner = getattr(module, "layer", None)
    return inner if isinstance(inner, FpLayer) else None


def has_statistics(module: nn.Module) -> bool:
    """A non-Fp module with buffers (running statistics such as batch norm's): it changes in
    training mode, so the greedy schedule gives it a pass of its own."""
    return fp_layer_of(module) is None and any(True for _ in module.buffers())


class FpStack(nn.Module):
    """Modules applied in order, like ``nn.Sequential``; the Fp layers among them learn.

    ``stack(x)`` runs every module (Fp layers learn when learning, see ``FpLayer.learning``);
    ``stack.outputs(x)`` also returns each module's output; ``fit`` runs a schedule over a data
    set; ``collect_statistics`` fits the statistics modules in front of a stage; ``embed(X,
    stage)`` gives a stage's output, frozen.
    """

    def __init__(self, *modules: nn.Module):
        super().__init__()
        if not modules:
            raise ValueError("FpStack needs at least one module")
        for m in modules:
            if not isinstance(m, nn.Module):
                raise ValueError(f"FpStack takes torch modules, got {type(m).__name__}")
        if not any(fp_layer_of(m) is not None for m in modules):
            raise ValueError("FpStack needs at least one Fp layer (FpLinear or FpConv2d, or a "
                             "module wrapping one in its `layer` attribute)")
        self.layers = nn.ModuleList(modules)

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, index):
        return self.layers[index]

    @property
    def fp_indices(self) -> list[int]:
        """Positions of the Fp layers (or the modules wrapping them) in the stack."""
        return [i for i, m in enumerate(self.layers) if fp_layer_of(m) is not None]

    def fp_layers(self) -> list[FpLayer]:
        """The Fp layers themselves, in order (unwrapped)."""
        return [fp_layer_of(self.layers[i]) for i in self.fp_indices]

    def names(self) -> list[str]:
        """A short name per stage: ``0:FpConv2d``, ``1:MaxPool2d``, ..."""
        return [f"{i}:{type(m).__name__}" for i, m in enumerate(self.layers)]

    def forward(self, x: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        """Run the modules (through stage ``upto`` inclusive when given)."""
        for i, m in enumerate(self.layers):
            x = m(x)
            if upto is not None and i >= upto:
                break
        return x

    def outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every stage's output, in order (a forward: Fp layers learn when learning)."""
        out = []
        for m in self.layers:
            x = m(x)
            out.append(x)
        return out

    def _stage(self, stage) -> int:
        n = len(self.layers)
        if isinstance(stage, bool) or not isinstance(stage, int) or not -n <= stage < n:
            raise ValueError(f"stage must be an int in [{-n}, {n}), got {stage!r}")
        return stage % n

    def _flags(self):
        """Every module's training flag and every Fp layer's frozen flag, to restore later."""
        return [m.training for m in self.modules()], [f.frozen for f in self.fp_layers()]

    def _restore(self, flags):
        training, frozen = flags
        for m, t in zip(self.modules(), training):
            m.training = t
        for f, z in zip(self.fp_layers(), frozen):
            f.frozen = z

    @torch.no_grad()
    def embed(self, X: torch.Tensor, stage: int = -1, batch_size: int = 512,
              flatten: bool = True) -> torch.Tensor:
        """Stage ``stage``'s output on X, flattened to (n, features) (``flatten=False``: as the
        module gives it), with nothing learning or collecting statistics (eval mode); every flag
        is restored afterwards."""
        stage = self._stage(stage)
        flags = self._flags()
        self.eval()
        try:
            out = [self(X[s:s + batch_size], upto=stage) for s in range(0, len(X), batch_size)]
            return torch.cat([o.flatten(1) for o in out] if flatten else out)
        finally:
            self._restore(flags)

    @torch.no_grad()
    def collect_statistics(self, X: torch.Tensor, stop: int | None = None,
                           batch_size: int = 256) -> "FpStack":
        """One pass over X in data order in which the statistics modules between the last Fp layer
        before ``stop`` and ``stop`` (default: the modules after the last Fp layer) collect their
        statistics (training mode); every module before them runs in eval mode. A pass that would
        change nothing (no statistics module there) is skipped. Flags are restored afterwards."""
        stop = len(self.layers) if stop is None else self._stage(stop)
        start = max([i + 1 for i in self.fp_indices if i < stop], default=0)
        if not any(has_statistics(self.layers[i]) for i in range(start, stop)):
            return self
        flags = self._flags()
        self.eval()
        for i in range(start, stop):
            self.layers[i].train()
        try:
            for s in range(0, len(X), batch_size):
                self(X[s:s + batch_size], upto=stop - 1)
        finally:
            self._restore(flags)
        return self

    def fit(self, X: torch.Tensor, epochs: int = 1, batch_size: int = 256, schedule: str = "joint",
            seed: int = 0, progress: bool = False) -> "FpStack":
        """Train the Fp layers on X (n, ...) without labels: ``epochs`` shuffled passes (per layer
        for ``"greedy"``, see the module docstring). Afterwards every module is back in its
        previous training mode and every Fp layer in its previous frozen state. A frozen Fp
        layer does not learn; under ``"greedy"`` its epochs are skipped (they would change
        nothing; the shuffles of the next layers stay the same)."""
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {epochs!r}")
        if not isinstance(X, torch.Tensor) or len(X) == 0:
            raise ValueError("fit expects a non-empty tensor of samples")
        generator = torch.Generator().manual_seed(seed)
        flags = self._flags()
        try:
            if schedule == "joint":
                self.train()
                self._epochs(X, epochs, batch_size, generator, None, "all layers", progress)
                return self
            for i in self.fp_indices:
                self.collect_statistics(X, stop=i, batch_size=batch_size)
                self.eval()
                self.layers[i].train()
                if fp_layer_of(self.layers[i]).frozen:
                    for _ in range(epochs):
                        torch.randperm(len(X), generator=generator)
                    continue
                self._epochs(X, epochs, batch_size, generator, i, self.names()[i], progress)
            self.collect_statistics(X, batch_size=batch_size)
        finally:
            self._restore(flags)
        return self

    def _epochs(self, X, epochs, batch_size, generator, upto, name, progress):
        for epoch in range(epochs):
            order = torch.randperm(len(X), generator=generator)
            for s in range(0, len(X), batch_size):
                self(X[order[s:s + batch_size]], upto=upto)
            if progress:
                print(f"{name}: epoch {epoch + 1}/{epochs}")

    def extra_repr(self) -> str:
        return f"{len(self.fp_indices)} Fp layer(s)"


def conv_stack(in_channels: int = 1, image_size=(28, 28), channels=(16, 32), kernel_size: int = 5,
               pool: int = 2, out_features: int = 256, **layer_kwargs) -> FpStack:
    """FpConv2d -> MaxPool2d -> FpConv2d -> MaxPool2d ... -> Flatten -> FpLinear.

    channels: output channels of each conv layer (padding keeps the size, pooling divides it by
    ``pool``); layer_kwargs go to every Fp layer (w_boost, t_decay, mode, switches, seed, ...;
    an int seed is offset by the layer's position so that layers start different).
    """
    seed = layer_kwargs.pop("seed", None)
    h, w = image_size
    modules, c = [], in_channels
    for i, out in enumerate(channels):
        s = None if seed is None else seed + i
        modules += [FpConv2d(c, out, kernel_size, padding=kernel_size // 2, seed=s, **layer_kwargs),
                    nn.MaxPool2d(pool)]
        c, h, w = out, h // pool, w // pool
    if h < 1 or w < 1:
        raise ValueError(f"{len(channels)} poolings by {pool} leave nothing of a {image_size} image")
    s = None if seed is None else seed + len(channels)
    modules += [nn.Flatten(), FpLinear(c * h * w, out_features, seed=s, **layer_kwargs)]
    return FpStack(*modules)
