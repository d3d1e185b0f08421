"""The unit-length input patches of a convolution, kept as the images and the patch norms.

``FpConv2d`` learns from every C x kH x kW patch of its input scaled to unit length: E samples of
S output locations, K = C * kH * kW values each, K times the size of the input itself. Most of the
work needs only the patches' projections on the kernels, one ``F.conv2d`` divided by the patch
norms (the conv2d floor), and the compiled conv kernels read each patch they need straight from
the images (``channels_last()`` for ``kernels.batch_conv`` and ``scan_conv``, ``kernel_source()``
for ``kernels.batch_move_patches``). ``rows()`` writes the patches out for the solvers that walk
them as rows (the Gram and firing-rounds solvers, k-winners-take-all, the tensor paths).
Patches made ``as_rows`` (few input channels, where a matmul on the written-out rows beats
``F.conv2d``) reach every solver written out, one chunk at a time (``engine.solver_input``): a
chunk's rows, not the whole input's, exist at once.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class Patches:
    """Unit patches (E, S, K) of images (E, C, H, W) under a convolution's padding, without writing
    them out.

    ``norm`` (E, S) holds each patch's length (0: an all-zero patch, which never fires); locations
    in raster order over the (H_out, W_out) output of ``kernel_size`` / ``stride``. The
    projections convolve ``source``, the images before padding, with the padding (rows, columns)
    inside the call; ``images``, the padded copy (E, C, Hp, Wp), is made only for the paths that
    read it. Indexing selects samples, as it would the (E, S, K) tensor. ``as_rows``: the solvers
    take these patches written out (``engine.solver_input``)."""

    def __init__(self, source: torch.Tensor, norm: torch.Tensor, *, kernel_size: tuple, stride: tuple,
                 out_size: tuple, padding: tuple, as_rows: bool = False):
        self.source, self.norm, self.as_rows = source, norm, as_rows
        self.kernel_size, self.stride, self.out_size, self.padding = kernel_size, stride, out_size, padding
        self.channels = source.shape[1]
        self.shape = (len(source), norm.shape[1], self.channels * kernel_size[0] * kernel_size[1])
        self.device, self.dtype = source.device, source.dtype
        self._padded = None

    @property
    def images(self) -> torch.Tensor:
        """The padded images (E, C, Hp, Wp), made on first use."""
        if self._padded is None:
            (ph, pw) = self.padding
            self._padded = F.pad(self.source, (pw, pw, ph, ph)) if ph or pw else self.source
        return self._padded

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index) -> Patches:
        return Patches(self.source[index], self.norm[index], kernel_size=self.kernel_size,
                       stride=self.stride, out_size=self.out_size, padding=self.padding, as_rows=self.as_rows)

    def new_zeros(self, *size) -> torch.Tensor:
        return self.source.new_zeros(*size)

    def new_empty(self, *size) -> torch.Tensor:
        return self.source.new_empty(*size)

    def denominator(self) -> torch.Tensor:
        """The patch lengths, all-zero patches' raised to the smallest normal number (their
        projections stay 0). # (E, S)"""
        return self.norm.clamp_min(torch.finfo(self.dtype).tiny)

    def raw_projections(self, weight: torch.Tensor) -> torch.Tensor:
        """Each patch's projection on each row of weight (N, K) before the patch is scaled to
        unit length, one convolution in its own layout: (E, N, S)."""
        N = weight.shape[0]
        kernels = weight.reshape(N, self.channels, *self.kernel_size)
        return F.conv2d(self.source, kernels, stride=self.stride, padding=self.padding).view(len(self), N, -1)

    def project(self, weight: torch.Tensor) -> torch.Tensor:
        """Each unit patch's projection on each row of weight (N, K): an (E, S, N) view of an
        (E, N, S) tensor (the convolution's layout, which is the layer's output layout)."""
        raw = self.raw_projections(weight)  # (E, N, S)
        return raw.div_(self.denominator().unsqueeze(1)).transpose(1, 2)

    def rows(self) -> torch.Tensor:
        """The unit patches written out, (E, S, K) (the rows of ``F.unfold``, scaled)."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        windows = self.images.unfold(2, kh, sh).unfold(3, kw, sw)  # (E, C, Ho, Wo, kH, kW)
        E, C, Ho, Wo = windows.shape[:4]
        unit = self.images.new_empty(E, Ho, Wo, C, kh, kw)
        torch.div(windows.permute(0, 2, 3, 1, 4, 5), self.denominator().view(E, Ho, Wo, 1, 1, 1), out=unit)
        return unit.view(E, Ho * Wo, C * kh * kw)

    def inverse_norm(self) -> torch.Tensor:
        """1 / norm, 0 for all-zero patches. # (E, S)"""
        return torch.where(self.norm > 0, 1.0 / self.norm.clamp_min(torch.finfo(self.dtype).tiny),
                           torch.zeros((), dtype=self.dtype, device=self.device))

    def channels_last(self) -> torch.Tensor:
        """The padded images as (E, Hp, Wp * C): a patch row is kW * C contiguous values (one pass
        over the unpadded images, no padded copy first)."""
        E, C, H, W = self.source.shape
        (ph, pw) = self.padding
        padded = self.source.new_empty(E, H + 2 * ph, W + 2 * pw, C)
        padded[:, ph:ph + H, pw:pw + W] = self.source.permute(0, 2, 3, 1)
        for border in (padded[:, :ph], padded[:, ph + H:], padded[:, ph:ph + H, :pw], padded[:, ph:ph + H, pw + W:]):
            border.zero_()  # the padding alone: the rest is written once, not zeroed first
        return padded.view(E, H + 2 * ph, (W + 2 * pw) * C)

    def kernel_source(self) -> tuple:
        """What ``kernels.batch_move_patches`` reads: the images (E, C, Hp, Wp), the inverse patch
        norms (E, S) and the geometry (W_out, kH, kW, sH, sW)."""
        geometry = np.array([self.out_size[1], *self.kernel_size, *self.stride], dtype=np.int64)
        return (np.ascontiguousarray(self.images.numpy()), np.ascontiguousarray(self.inverse_norm().numpy()),
                geometry)
