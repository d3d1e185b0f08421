"""What goes between the Fp layers of a Hebbian conv net, as torch modules an ``FpStack`` accepts.

Each piece says what it does to the next layer's input. Pieces with fitted statistics
(``ChannelStandardize``, ``PatchWhiten``) collect them in training mode, without gradients, over
everything they have seen (exact running moments, so the result does not depend on how the data
was cut into batches beyond float rounding), and keep them in buffers (``state_dict`` round-trip).
In eval mode they apply the statistics they have. ``FpStack.fit`` puts them in training mode for
one pass before the Fp layer after them learns (greedy) or while the stack learns (joint).

- ``PatchWhiten``: the first layer's input as patches, centred and ZCA-whitened (Coates et al.
  2011); the next layer is an ``FpConv2d(C*kH*kW, N, 1)`` that sees each whitened patch.
- ``ChannelStandardize``: per-channel zero mean, unit variance (``nn.BatchNorm2d(C,
  affine=False)`` is the batch-statistics alternative; both work in a stack).
- ``Triangle``, ``RePU``: the non-linearity after a layer (Coates' triangle; SoftHebb's RePU).
- ``Readout``: an Fp layer whose output is a probe readout of its cosines instead of its fired
  values; ``pool`` builds the pooling layers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from ..evaluation.probes import READOUTS, cosines, topk_count
from ..layers.base import FpLayer

POOLS = ("max", "avg", "quadrant")


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


class _Moments(nn.Module):
    """Running count, mean (D,) and second central moment of what ``collect`` saw, in float64."""

    def __init__(self, size: int, full: bool):
        super().__init__()
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(size, dtype=torch.float64))
        # full: covariance (D, D); else the variance per entry (D,)
        self.register_buffer("moment", torch.zeros((size, size) if full else size, dtype=torch.float64))

    @torch.no_grad()
    def collect(self, rows: torch.Tensor):
        """Merge the moments of rows (n, D) into the running ones (Chan et al.'s pairwise update)."""
        rows = rows.double()
        n = len(rows)
        if n == 0:
            return
        mean = rows.mean(0)
        centred = rows - mean
        full = self.moment.dim() == 2
        moment = centred.T @ centred / n if full else centred.pow(2).mean(0)
        total = self.count + n
        delta = mean - self.mean
        spread = torch.outer(delta, delta) if full else delta.pow(2)
        self.moment.copy_((self.moment * self.count + moment * n + spread * (self.count * n / total)) / total)
        self.mean.add_(delta * (n / total))
        self.count.copy_(total)

    def check(self, name: str):
        if not self.count > 0:
            raise ValueError(f"{name} has no statistics yet: run it in training mode first "
                             f"(FpStack.fit or FpStack.collect_statistics do)")


class ChannelStandardize(nn.Module):
    """Per channel: ``(x - mean_c) / sqrt(var_c + eps)``, mean and variance over the batch and
    spatial positions of everything seen in training mode.

    Next layer's input: every channel has zero mean and unit variance over the data, so no
    channel dominates a patch's length by its scale, and values are signed (an Fp layer's
    patches then point in every direction, not only into the positive orthant). Gradients flow
    through x (the statistics are constants), so a backprop twin can use the same module.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5):
        super().__init__()
        _check_positive_int("num_channels", num_channels)
        _check_positive("eps", eps)
        self.num_channels, self.eps = num_channels, float(eps)
        self.stats = _Moments(num_channels, full=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"ChannelStandardize expects (batch, {self.num_channels}, ...), "
                             f"got {tuple(x.shape)}")
        if self.training:
            self.stats.collect(x.detach().transpose(0, 1).reshape(self.num_channels, -1).T)
        self.stats.check("ChannelStandardize")
        shape = (1, -1) + (1,) * (x.dim() - 2)
        mean = self.stats.mean.to(x.dtype).view(shape)
        scale = (self.stats.moment + self.eps).rsqrt().to(x.dtype).view(shape)
        return (x - mean) * scale

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps:g}, seen={int(self.stats.count)}"


class PatchWhiten(nn.Module):
    """Every ``C x kH x kW`` input patch as a vector on the channel axis: (B, C*kH*kW, H_out, W_out),
    centred and ZCA-whitened (Coates, Lee and Ng 2011).

    Per patch p (a row of ``F.unfold``): with ``center``, p - mean(p) (its own brightness removed);
    with ``normalize`` also divided by sqrt(var(p) + ``norm_eps``) (contrast normalisation); with
    ``zca``, (p - m) W where m is the mean patch and W = U (S + eps * mean(S))^(-1/2) U^T from the
    patches' covariance U S U^T (``eps`` relative to the mean eigenvalue, so it works at any pixel
    scale). Statistics are collected in training mode; W is recomputed after each batch.

    Next layer's input: ``FpConv2d(C*kH*kW, N, 1)`` sees exactly the whitened patch at each
    location: its dimensions decorrelated with equal variance, so a kernel's cosine with it weighs
    edges and fine structure as much as overall brightness, which otherwise dominates every patch.
    Flat patches (all pixels equal, e.g. background) become all-zero: they never fire.
    """

    def __init__(self, in_channels: int, kernel_size, stride=1, padding=0, *, center: bool = True,
                 normalize: bool = False, zca: bool = True, eps: float = 0.1, norm_eps: float = 1e-2):
        super().__init__()
        _check_positive_int("in_channels", in_channels)
        self.kernel_size, self.stride, self.padding = (_pair(v) for v in (kernel_size, stride, padding))
        for name, value, low in (("kernel_size", self.kernel_size, 1), ("stride", self.stride, 1),
                                 ("padding", self.padding, 0)):
            if any(isinstance(v, bool) or not isinstance(v, int) or v < low for v in value):
                raise ValueError(f"{name} must be int(s) >= {low}, got {value!r}")
        _check_positive("eps", eps)
        _check_positive("norm_eps", norm_eps)
        self.in_channels = in_channels
        self.center, self.normalize, self.zca = bool(center), bool(normalize), bool(zca)
        self.eps, self.norm_eps = float(eps), float(norm_eps)
        self.out_channels = in_channels * self.kernel_size[0] * self.kernel_size[1]
        self.stats = _Moments(self.out_channels, full=True)
        self.register_buffer("whitening", torch.eye(self.out_channels, dtype=torch.float64))  # (D, D)

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """Centred (and normalised) patches before whitening: (B, L, D)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"PatchWhiten expects (batch, {self.in_channels}, H, W), got {tuple(x.shape)}")
        p = F.unfold(x, self.kernel_size, padding=self.padding, stride=self.stride).transpose(1, 2)
        if self.center:
            p = p - p.mean(2, keepdim=True)
        if self.normalize:
            p = p / (p.var(2, keepdim=True, unbiased=False) + self.norm_eps).sqrt()
        return p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patches(x)  # (B, L, D)
        B, L, D = p.shape
        if self.zca:
            if self.training:
                self.stats.collect(p.detach().reshape(-1, D))
                with torch.no_grad():
                    S, U = torch.linalg.eigh(self.stats.moment)
                    S = S.clamp_min(0)
                    self.whitening.copy_(U @ torch.diag((S + self.eps * S.mean()).rsqrt()) @ U.T)
            self.stats.check("PatchWhiten")
            p = (p - self.stats.mean.to(p.dtype)) @ self.whitening.to(p.dtype)
        H = (x.shape[2] + 2 * self.padding[0] - self.kernel_size[0]) // self.stride[0] + 1
        W = (x.shape[3] + 2 * self.padding[1] - self.kernel_size[1]) // self.stride[1] + 1
        return p.transpose(1, 2).reshape(B, D, H, W)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, center={self.center}, normalize={self.normalize}, "
                f"zca={self.zca}, eps={self.eps:g}")


class Triangle(nn.Module):
    """``max(0, x - mean_c(x)) ** power``: at each location, the channels above that location's mean
    over channels keep their excess, the rest become 0 (Coates et al.'s triangle activation,
    applied to similarities instead of distances; SoftHebb's Triangle).

    Next layer's input: about half the channels are 0 at every location, and a location where
    every kernel responds alike (a response to contrast, not to a shape) is all-zero.
    """

    def __init__(self, power: float = 1.0):
        super().__init__()
        _check_positive("power", power)
        self.power = float(power)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = (x - x.mean(1, keepdim=True)).clamp_min(0)
        return out if self.power == 1 else out.pow(self.power)

    def extra_repr(self) -> str:
        return f"power={self.power:g}"


class RePU(nn.Module):
    """``max(0, x) ** power`` (rectified power unit, SoftHebb): negative responses become 0 and large
    ones grow faster than small ones, so the next layer's patches are dominated by the few
    strongest responses (a soft winner-take-all across channels and positions)."""

    def __init__(self, power: float = 2.0):
        super().__init__()
        _check_positive("power", power)
        self.power = float(power)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp_min(0).pow(self.power)

    def extra_repr(self) -> str:
        return f"power={self.power:g}"


class Readout(nn.Module):
    """An Fp layer whose output is a probe readout of its response (see ``fpwb.evaluation.probes``):
    ``fired`` (the layer's own output), ``relu``, ``topk`` or ``linear`` (the cosines y = W x of
    the unit-length input or patches, (B, N) or (B, N, H_out, W_out)).

    While the layer learns, a forward first runs the layer (it learns on x), then reads the
    cosines with the weights it has after that batch. ``FpStack`` treats the wrapper as the Fp
    layer it holds (``layer``). Next layer's input: with ``linear``, every kernel's similarity
    with every patch, signed and not thresholded (a random layer gives the same kind of map, so
    learned and untrained kernels are compared on equal terms; the ``fired`` readout is 0 for a
    layer whose thresholds never learned).
    """

    def __init__(self, layer: FpLayer, readout: str = "linear", k=None):
        super().__init__()
        if not isinstance(layer, FpLayer):
            raise ValueError(f"Readout wraps an FpLinear or FpConv2d, got {type(layer).__name__}")
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        self.layer, self.readout, self.k = layer, readout, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.readout == "fired":
            return self.layer(x)
        if self.layer.learning:
            self.layer(x)
        with torch.no_grad():
            y = cosines(self.layer, x)  # (B, N) or (B, N, Ho, Wo)
        if self.readout == "relu":
            y = y.clamp_min(0)
        elif self.readout == "topk":
            flat = y.reshape(len(y), -1)
            top = flat.topk(topk_count(flat.shape[1], self.k), dim=1)
            y = torch.zeros_like(flat).scatter_(1, top.indices, top.values).view_as(y)
        return y

    def extra_repr(self) -> str:
        return f"readout={self.readout!r}" + (f", k={self.k}" if self.k is not None else "")


def pool(kind: str = "max", kernel_size: int = 4, stride: int = 2, padding: int = 1) -> nn.Module:
    """A pooling layer: ``max`` (nn.MaxPool2d; SoftHebb's 4x4, stride 2, padding 1 by default),
    ``avg`` (nn.AvgPool2d, same window) or ``quadrant`` (Coates' sum over the four quadrants, as an
    average: nn.AdaptiveAvgPool2d(2); the window arguments are ignored).

    Next layer's input: a smaller map (H // stride) in which each value summarises a window:
    max keeps the strongest response (shifts of a few pixels no longer change it), avg its mean.
    """
    if kind not in POOLS:
        raise ValueError(f"pool kind must be one of {POOLS}, got {kind!r}")
    if kind == "quadrant":
        return nn.AdaptiveAvgPool2d(2)
    cls = nn.MaxPool2d if kind == "max" else nn.AvgPool2d
    return cls(kernel_size, stride=stride, padding=padding)
