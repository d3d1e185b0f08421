"""Deep Hebbian conv nets: the pieces between Fp layers and the comparison protocol.

``pieces`` (what goes between the Fp layers of an ``FpStack``: patch whitening, per-channel
standardisation, triangle and RePU activations, pooling, and ``Readout``, an Fp layer read out
through its cosines), ``protocol`` (1-, 2- and 3-stage conv nets built from one spec, and every
way of getting their kernels on one protocol: Frontprop rules, untrained, imprinted data patches,
k-means, backprop end to end; per-stage linear probes, learned share).

May import: torch, numpy, scikit-learn, ``fpwb.layers``, ``fpwb.rules``, ``fpwb.data``,
``fpwb.evaluation``, ``fpwb.baselines``.
"""
from .pieces import POOLS, ChannelStandardize, PatchWhiten, Readout, RePU, Triangle, pool

__all__ = ["POOLS", "ChannelStandardize", "PatchWhiten", "Readout", "RePU", "Triangle", "pool"]
