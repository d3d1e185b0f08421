"""Looking at a layer: ``plots`` (weights as images, thresholds, firing, coverage, accuracy
curves), ``recorder`` (state snapshots while a layer learns) and ``explorer`` (the interactive
ipywidgets panel).

May import: ``fpwb.layers``, ``fpwb.evaluation``, ``fpwb.data``, matplotlib, ipywidgets.
"""
