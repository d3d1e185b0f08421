"""Measuring what a layer learned.

``probes`` (features under a readout, linear and k-NN probes), ``probe_table`` (every method and
size on one protocol), ``diagnostics`` (fired share, redundancy, class coverage), ``similarity``
(linear CKA against a backprop layer), ``convergence`` (does a layer find the simple patterns).

May import: ``fpwb.layers``, ``fpwb.rules``, ``fpwb.baselines``, ``fpwb.data``.
"""
