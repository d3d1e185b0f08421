"""FpConv2d: the Frontprop rule applied to every input patch, one threshold per output location."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

from . import engine
from .base import REPULSION_COSINE, SAFE_EXPONENT, FpLayer, power_of_two_scale
from .patches import Patches


#: From this many input channels on, projections run as one F.conv2d on the images; below it,
#: as a matmul on the written-out patches (measured: conv2d 2x slower at 1 and 3 channels, 1.5-5x
#: faster at 8 to 64, on the 2-core machine).
CONV_MIN_CHANNELS = 8


class FpConv2d(FpLayer):
    """Frontprop convolution: kernels learn from the patches they fire on.

    Every C x kH x kW input patch is scaled to unit length (all-zero patches never fire); each
    kernel is a unit vector. Kernel j fires at output location l where its cosine with the patch
    reaches its threshold t[j, l]; there is one threshold per (out channel, output row, output
    column), created at the first forward from the input size, which is then fixed.

    Order of updates (sequential mode): samples in order; inside a sample, output locations in
    raster order (row by row, left to right). Each location sees the kernels as the previous
    location left them: a fired kernel moves toward that patch and its threshold *at that location*
    becomes y. After the last location of a sample, every threshold decays once by (1 - t_decay).
    All-zero samples change nothing. ``mode="batch"``: every location of every sample in a chunk
    sees the kernels of the chunk start, the thresholds run as in sequential mode, and each
    kernel's updates combine at the chunk end (see ``fpwb.layers.engine.batch_chunk``).

    Output (B, out_channels, H_out, W_out) as ``nn.Conv2d``'s: y where fired, 0 elsewhere, each
    sample scaled to unit length when ``normalize_output``.

    The rule (``rule=``: a name of ``fpwb.rules.names()`` or a ``fpwb.rules.Rule``) and the
    switches (lateral inhibition by ``k_winners`` / ``k_output``, ``repulsion`` /
    ``repulsion_cosine``): see :class:`fpwb.layers.base.FpLayer`. Their defaults keep the plain
    rule. State also holds ``learn_count`` (N,).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = False, *, w_boost: float = 0.02,
                 t_decay: float = 0.0005, mode: str = "sequential", normalize_output: bool = True,
                 chunk_size: int = 65536, seed=None, device=None, dtype=None,
                 rule="frontprop", k_winners=None, k_output: bool = False,
                 repulsion: float = 0.0, repulsion_cosine: float = REPULSION_COSINE):
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        kernel_size, stride, padding, dilation = (_pair(v) for v in (kernel_size, stride, padding, dilation))
        for name, value, low in (("kernel_size", kernel_size, 1), ("stride", stride, 1), ("padding", padding, 0)):
            if len(value) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < low for v in value):
                raise ValueError(f"{name} must be an int >= {low} or a pair of them (height, width), "
                                 f"got {value!r}")
        if dilation != (1, 1):
            raise ValueError(f"FpConv2d supports dilation=1 only, got {dilation}")
        if groups != 1:
            raise ValueError(f"FpConv2d supports groups=1 only, got {groups}")
        super().__init__(w_boost=w_boost, t_decay=t_decay, mode=mode,
                         normalize_output=normalize_output, bias=bias, chunk_size=chunk_size,
                         rule=rule, k_winners=k_winners, k_output=k_output, repulsion=repulsion,
                         repulsion_cosine=repulsion_cosine)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        patch = in_channels * kernel_size[0] * kernel_size[1]
        self._init_state(out_channels, patch, seed, device, dtype)
        self.weight = self.weight.view(out_channels, in_channels, *kernel_size)
        self.register_buffer("threshold", None)  # (N, H_out, W_out), created by the first forward

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(H_out, W_out) for an input of height x width, as nn.Conv2d computes it."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._check_tensor(x)
        if x.dim() not in (3, 4) or x.shape[-3] != self.in_channels:
            raise ValueError(f"FpConv2d expects input of shape (batch, {self.in_channels}, H, W) or "
                             f"({self.in_channels}, H, W), got {tuple(x.shape)}")
        single = x.dim() == 3  # one unbatched image, as nn.Conv2d takes it
        x = x.unsqueeze(0) if single else x
        B, _, H, W = x.shape
        Ho, Wo = self.output_size(H, W)
        if Ho < 1 or Wo < 1:
            raise ValueError(f"input {H}x{W} is smaller than the kernel {self.kernel_size} "
                             f"with padding {self.padding}")
        if self.threshold is not None and tuple(self.threshold.shape[1:]) != (Ho, Wo):
            raise ValueError(f"FpConv2d thresholds exist for a {tuple(self.threshold.shape[1:])} "
                             f"output; input {H}x{W} gives {Ho}x{Wo}. Use inputs of the first size, "
                             f"or call reset_thresholds() to start over")
        with torch.no_grad():
            patches = self.patches(x)
            valid = patches.norm > 0  # (B, L)
            # Projections need no written-out patches (one conv2d), nor does batch mode's move;
            # with few input channels the matmul on written-out patches is faster. Written-out
            # patches are written one chunk at a time (engine.solver_input).
            patches.as_rows = self.in_channels < CONV_MIN_CHANNELS or (
                self.learning and not engine.reads_patches_in_kernels(self.mode, self.learning_setup(), x.device))
            nonzero = valid.any(1)  # all-zero samples are skipped entirely
            samples = nonzero.nonzero().squeeze(1)
            threshold = self.threshold
            created = threshold is None
            if created:  # thresholds start at 1.0; a learning forward keeps them
                with torch.inference_mode(False):
                    threshold = x.new_ones(self.out_channels, Ho, Wo)
                if self.learning and len(samples):
                    self.threshold = threshold
            weight = self.weight.view(self.out_channels, -1)
            seen = int(self.samples_seen)
            try:
                if len(samples) == B:
                    out = self._run(patches, valid, weight, threshold.view(self.out_channels, -1))  # (B, L, N)
                else:
                    out = x.new_zeros(B, Ho * Wo, self.out_channels)  # (B, L, N)
                    out[samples] = self._run(patches[samples], valid[samples], weight,
                                             threshold.view(self.out_channels, -1))
            except BaseException:
                if created and self.threshold is threshold and int(self.samples_seen) == seen:
                    self.threshold = None  # thresholds this call made, before it learned anything
                raise
            out = out.transpose(1, 2).reshape(B, self.out_channels, Ho, Wo)
            out = self._finish(out)
        return out[0] if single else out

    def patches(self, x: torch.Tensor) -> Patches:
        """Every C x kH x kW patch of x (B, C, H, W) scaled to unit length, locations in raster
        order, as ``Patches`` (the input and the patch norms: nothing written out). The
        norms come from one small convolution of x**2. A sample of extreme magnitudes is first
        scaled exactly by a power of two, so that its patches' squares neither overflow nor
        underflow."""
        kh, kw = self.kernel_size
        peak = x.abs().flatten(1).amax(1) if x.numel() else x.new_zeros(len(x))  # (B,)
        if bool(((peak > 2.0 ** SAFE_EXPONENT) | ((peak < 2.0 ** -SAFE_EXPONENT) & (peak > 0))).any()):
            x = x * power_of_two_scale(peak).view(-1, 1, 1, 1)  # exact; squares stay in range
        ones = x.new_ones(1, self.in_channels, kh, kw)
        norm = F.conv2d(x * x, ones, stride=self.stride, padding=self.padding).sqrt_()  # (B, 1, Ho, Wo)
        return Patches(x, norm.reshape(len(x), norm.shape[2] * norm.shape[3]), kernel_size=self.kernel_size,
                       stride=self.stride, out_size=tuple(norm.shape[2:]), padding=self.padding)

    def unit_patches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every input patch as a unit row, (B, L, K) (the rows of ``F.unfold``, scaled), and which
        patches are non-zero, (B, L): ``patches(x)`` written out."""
        patches = self.patches(x)
        return patches.rows(), patches.norm > 0

    def _output_buffer(self, x, shape: tuple, mode: str) -> torch.Tensor:
        """The output in the convolution's (E, N, S) layout, the layout ``forward`` returns (the
        conv kernels write it so); a view of it in the chunks' (E, S, N)."""
        E, S, N = shape
        return super()._output_buffer(x, (E, N, S), mode).transpose(1, 2)

    def reset_thresholds(self):
        """Forget the thresholds (and so the input size); the next forward starts them at 1.0."""
        self.threshold = None

    def _lazy_buffers(self):
        return ("threshold",)

    def _expected_shapes(self, given):
        saved = given.get("threshold")
        if self.threshold is None and saved is not None:  # any output size, one map per kernel
            return {"threshold": (self.out_channels, *tuple(saved.shape)[1:])}
        return {}

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, " + super().extra_repr())
