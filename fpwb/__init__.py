"""fpwb: the Frontprop workbench.

Subpackages, one idea each (each docstring says what it holds and may import):

- ``fpwb.layers``: FpLinear, FpConv2d, FpStack, ``to_frontprop`` and the engine under them.
- ``fpwb.rules``: the learning rules, one module each, with their reference steps.
- ``fpwb.data``: data sets, streams, the simple patterns.
- ``fpwb.evaluation``: probes, the probe table, diagnostics, CKA, pattern convergence.
- ``fpwb.baselines``: random, k-means and PCA layers; Forward-Forward.
- ``fpwb.nets``: the pieces between conv stages and the deep conv protocol.
- ``fpwb.distributed``: neuron-sharded layers over torch.distributed, decentralised learners.
- ``fpwb.lm``: a pretrained tiny LM (cached under data/), Frontprop drop-ins for its Linear
  layers, continued training by Frontprop / backprop.
- ``fpwb.studies``: continual learning, labels in the input, efficiency.
- ``fpwb.viz``: plots, the recorder, the interactive explorer.
- ``fpwb.runs``: notebooks into reports and sweeps.
"""
from . import rules
from .layers import FpConv2d, FpLinear, FpStack, conv_stack, to_frontprop

__all__ = ["FpLinear", "FpConv2d", "FpStack", "conv_stack", "to_frontprop", "rules"]
