"""FpStack: Frontprop layers stacked with plain torch modules (pooling, flatten) in between.

Every Fp layer learns from what the modules before it give it. Two schedules:

- ``"joint"``: one forward pass over a batch trains every Fp layer at once; layer i+1 learns on
  the output of layer i as layer i left it after learning on that same batch.
- ``"greedy"``: layer by layer. The first Fp layer learns for ``epochs`` passes over the data with
  nothing after it run, then it is frozen and the second learns on its (frozen) output, and so on.

Every module's output can be read (``outputs``), and ``embed`` gives the flattened features of any
stage for a probe, without learning.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import FpLayer
from .conv import FpConv2d
from .linear import FpLinear

SCHEDULES = ("joint", "greedy")


class FpStack(nn.Module):
    """Modules applied in order, like ``nn.Sequential``; the Fp layers among them learn.

    ``stack(x)`` runs every module (Fp layers learn when learning, see ``FpLayer.learning``);
    ``stack.outputs(x)`` also returns each module's output; ``fit`` runs a schedule over a data
    set; ``embed(X, stage)`` gives a stage's output flattened, frozen.
    """

    def __init__(self, *modules: nn.Module):
        super().__init__()
        if not modules:
            raise ValueError("FpStack needs at least one module")
        for m in modules:
            if not isinstance(m, nn.Module):
                raise ValueError(f"FpStack takes torch modules, got {type(m).__name__}")
        if not any(isinstance(m, FpLayer) for m in modules):
            raise ValueError("FpStack needs at least one Fp layer (FpLinear or FpConv2d)")
        self.layers = nn.ModuleList(modules)

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, index):
        return self.layers[index]

    @property
    def fp_indices(self) -> list[int]:
        """Positions of the Fp layers in the stack."""
        return [i for i, m in enumerate(self.layers) if isinstance(m, FpLayer)]

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

    @torch.no_grad()
    def embed(self, X: torch.Tensor, stage: int = -1, batch_size: int = 512) -> torch.Tensor:
        """Stage ``stage``'s output on X, flattened to (n, features), with nothing learning; the
        flags of every layer are restored afterwards."""
        stage = self._stage(stage)
        frozen = [m.frozen for m in self.layers if isinstance(m, FpLayer)]
        training = self.training
        self.eval()
        try:
            return torch.cat([self(X[s:s + batch_size], upto=stage).flatten(1)
                              for s in range(0, len(X), batch_size)])
        finally:
            self.train(training)
            for m, f in zip((m for m in self.layers if isinstance(m, FpLayer)), frozen):
                m.frozen = f

    def fit(self, X: torch.Tensor, epochs: int = 1, batch_size: int = 256, schedule: str = "joint",
            seed: int = 0, progress: bool = False) -> "FpStack":
        """Train the Fp layers on X (n, ...) without labels: ``epochs`` shuffled passes (per layer
        for ``"greedy"``). Afterwards every Fp layer is back in its previous frozen state, except
        that under ``"greedy"`` layers stay as they were (learning) too: the schedule only freezes
        the layers before the one learning, for the time it learns."""
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {epochs!r}")
        if not isinstance(X, torch.Tensor) or len(X) == 0:
            raise ValueError("fit expects a non-empty tensor of samples")
        self.train()
        generator = torch.Generator().manual_seed(seed)
        fp = self.fp_indices
        phases = [(None, fp[-1])] if schedule == "joint" else [(i, i) for i in fp]
        frozen = {i: self.layers[i].frozen for i in fp}
        try:
            for learner, last in phases:
                for i in fp:  # greedy: only the learner learns; joint: every layer
                    self.layers[i].frozen = frozen[i] if learner is None else (i != learner or frozen[i])
                for epoch in range(epochs):
                    order = torch.randperm(len(X), generator=generator)
                    for s in range(0, len(X), batch_size):
                        self(X[order[s:s + batch_size]], upto=last)
                    if progress:
                        print(f"{'all layers' if learner is None else self.names()[learner]}: "
                              f"epoch {epoch + 1}/{epochs}")
        finally:
            for i in fp:
                self.layers[i].frozen = frozen[i]
        return self

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
