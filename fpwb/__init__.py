"""fpwb: the Frontprop workbench."""
from .conv import FpConv2d
from .linear import FpLinear

__all__ = ["FpLinear", "FpConv2d"]
