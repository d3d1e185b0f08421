"""What FpLinear and FpConv2d share: hyper-parameters, state buffers, input checks, learning switch."""
from __future__ import annotations

import math

import torch
from torch import nn

from . import engine

MODES = ("sequential", "batch")


def check_hyperparameter(name: str, value) -> float:
    """A positive, finite float, or a ValueError that names the parameter."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def make_generator(seed) -> torch.Generator | None:
    """A CPU generator from an int seed; a Generator passes through; None means torch's global RNG."""
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int or a torch.Generator, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def unit_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows scaled to unit length, and which rows were non-zero.  x: (..., K)"""
    norm = x.norm(dim=-1, keepdim=True)
    valid = norm.squeeze(-1) > 0
    return x / norm.clamp_min(torch.finfo(x.dtype).tiny), valid


class FpLayer(nn.Module):
    """Base of the Frontprop layers. Subclasses set ``weight`` (N, ...) and ``threshold`` buffers.

    Learning happens in ``forward`` while the layer is learning: in training mode (``train()``, the
    default) and not frozen (``freeze()``). Otherwise a forward maps inputs with the current state
    and changes nothing.
    """

    def __init__(self, *, w_boost, t_decay, mode, normalize_output, bias, chunk_size):
        super().__init__()
        if bias:
            raise ValueError(
                f"{type(self).__name__} has no bias: the threshold is its only offset; pass bias=False")
        self.w_boost = w_boost
        self.t_decay = t_decay
        self.mode = mode
        self.normalize_output = bool(normalize_output)
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        self.chunk_size = chunk_size
        self.frozen = False
        self.solver = None  # force a sequential solver: "gram", "direct", "rounds"; None picks

    # Hyper-parameters are validated on every assignment (widgets and sweeps set them live).
    @property
    def w_boost(self) -> float:
        return self._w_boost

    @w_boost.setter
    def w_boost(self, value):
        self._w_boost = check_hyperparameter("w_boost", value)

    @property
    def t_decay(self) -> float:
        return self._t_decay

    @t_decay.setter
    def t_decay(self, value):
        value = check_hyperparameter("t_decay", value)
        if value >= 1:
            raise ValueError(f"t_decay must be below 1 (thresholds shrink by 1 - t_decay), got {value!r}")
        self._t_decay = value

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value):
        if value not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {value!r}")
        self._mode = value

    @property
    def learning(self) -> bool:
        """True when a forward pass changes the layer (training mode and not frozen)."""
        return self.training and not self.frozen

    def freeze(self):
        """Stop learning: forward passes map inputs with the current state and change nothing."""
        self.frozen = True
        return self

    def unfreeze(self):
        self.frozen = False
        return self

    def _init_state(self, n: int, k: int, seed, device, dtype):
        """Register ``weight`` (Gaussian, unit rows), ``fire_count`` and ``samples_seen``."""
        generator = make_generator(seed)
        dtype = dtype or torch.get_default_dtype()
        weight = torch.randn(n, k, generator=generator, dtype=dtype)
        weight /= weight.norm(dim=1, keepdim=True)
        self.register_buffer("weight", weight.to(device))
        self.register_buffer("fire_count", torch.zeros(n, dtype=torch.long, device=device))
        self.register_buffer("samples_seen", torch.zeros((), dtype=torch.long, device=device))

    def _check_tensor(self, x) -> torch.Tensor:
        """Type, device and finiteness checks; returns x in the layer's dtype."""
        name = type(self).__name__
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name} expects a torch.Tensor, got {type(x).__name__}")
        if x.dtype == torch.bool or x.is_complex():
            raise ValueError(f"{name} expects real-valued input (float or uint8 images), got {x.dtype}")
        if x.device != self.weight.device:
            raise ValueError(f"{name} lives on {self.weight.device}, input is on {x.device}")
        x = x.to(self.weight.dtype)
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} input contains NaN or Inf values")
        return x

    def _run(self, x, valid, weight, threshold) -> torch.Tensor:
        """Apply the rule to x (E, S, K) unit rows, valid (E, S); weight (N, K) and threshold (N, S)
        are views of the buffers, updated in place.

        Returns the fired values (E, S, N). Learns in chunks of whole steps when learning.
        """
        if not self.learning:
            values = x @ weight.T  # (E, S, N)
            return values * ((values >= threshold.T) & valid.unsqueeze(-1))
        E, S, _ = x.shape
        steps = engine.max_steps(self.t_decay, max(1, self.chunk_size // S))
        outs = []
        for start in range(0, E, steps):
            chunk = slice(start, start + steps)
            args = (x[chunk], valid[chunk], weight, threshold, self.w_boost, self.t_decay)
            if self.mode == "sequential":
                outs.append(engine.sequential_chunk(*args, solver=self.solver))
            else:
                outs.append(engine.batch_chunk(*args))
        out = torch.cat(outs) if outs else x.new_zeros(0, S, weight.shape[0])
        self.fire_count += (out > 0).sum(dim=(0, 1))
        self.samples_seen += E
        return out

    def _finish(self, out: torch.Tensor) -> torch.Tensor:
        """Scale each sample's output (B, ...) to unit length when normalize_output is on."""
        if self.normalize_output:
            norm = out.flatten(1).norm(dim=1).clamp_min(torch.finfo(out.dtype).tiny)
            out = out / norm.view(-1, *([1] * (out.dim() - 1)))
        return out

    def extra_repr(self) -> str:
        frozen = ", frozen" if self.frozen else ""
        return (f"w_boost={self.w_boost:g}, t_decay={self.t_decay:g}, mode={self.mode!r}, "
                f"normalize_output={self.normalize_output}{frozen}")
