"""fpwb: the Frontprop workbench.

Layers live at the top level; the rest by topic: ``fpwb.data`` (data sets, streams, patterns),
``fpwb.probes`` / ``fpwb.baselines`` / ``fpwb.diagnostics`` / ``fpwb.probe_table`` (measuring
what a layer learned), ``fpwb.plots``, ``fpwb.recorder``, ``fpwb.explorer``, ``fpwb.report`` and
``fpwb.sweep`` (notebooks into reports), ``fpwb.continual``, ``fpwb.labels``,
``fpwb.forward_forward``, ``fpwb.similarity``, ``fpwb.efficiency`` (the claims tested).
"""
from .conv import FpConv2d
from .convert import to_frontprop
from .linear import FpLinear
from .stack import FpStack, conv_stack

__all__ = ["FpLinear", "FpConv2d", "FpStack", "conv_stack", "to_frontprop"]
