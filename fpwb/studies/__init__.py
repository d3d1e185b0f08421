"""The claims of the upstream README, each as a study: ``continual`` (no catastrophic forgetting?),
``labels`` (labels in the input), ``efficiency`` (cheaper than backprop?).

May import: ``fpwb.layers``, ``fpwb.evaluation``, ``fpwb.baselines``, ``fpwb.data``.
"""
