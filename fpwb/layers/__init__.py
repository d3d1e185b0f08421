"""The Frontprop layers and what runs them.

``FpLinear`` and ``FpConv2d`` (on the shared ``base.FpLayer``), ``FpStack`` (layers with plain torch
modules between them), ``to_frontprop`` (swap a model's Linear / Conv2d for Fp layers), and the
machinery under them: ``engine`` (a chunk of inputs through a rule, exactly), ``kernels`` (its
compiled CPU loops) and ``patches`` (a convolution's unit patches without writing them out). What a neuron does when it fires comes from ``fpwb.rules``.

May import: torch, numba, numpy, ``fpwb.rules``.
"""
from .conv import FpConv2d
from .convert import to_frontprop
from .linear import FpLinear
from .stack import FpStack, conv_stack

__all__ = ["FpLinear", "FpConv2d", "FpStack", "conv_stack", "to_frontprop"]
