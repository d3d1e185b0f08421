"""Data for Frontprop experiments: built-in patterns, image data sets, streams and task splits."""
from .patterns import PATTERN_NAMES, SIMPLE_PATTERNS, simple_patterns

__all__ = ["PATTERN_NAMES", "SIMPLE_PATTERNS", "simple_patterns"]
