"""Frontprop beyond one process, on torch's own distributed engine (``torch.distributed``).

- ``sharded``: a layer whose neurons are split over ranks (``ShardedLayer``, ``shard_layer``):
  every rank sees the same inputs and owns a contiguous slice of the neurons; the outputs are
  gathered. Bit-identical to the same layer in one process for the rules whose neurons never
  interact ("frontprop", "oja"), and for k-winners-take-all by exchanging each position's
  candidates. State: each rank saves its shard; ``gather_layer`` / ``merge_shards`` make an
  ordinary FpLinear / FpConv2d again, ``split_layer`` cuts one.
- ``decentralised``: several learners on their own streams that merge every ``merge_every``
  samples, by matched averaging (Hungarian matching on weight cosines) or by pooling their
  most-fired neurons; in one process or one process per learner; ``study`` measures them against
  one sequential learner and a random layer (notebook 13).
- ``launch``: start a few local gloo processes (loopback, a free port, a timeout) for tests,
  notebooks and benchmarks.

May import: torch, numpy, scipy, tqdm, ``fpwb.layers``; ``decentralised.study`` also
``fpwb.evaluation`` and ``fpwb.baselines``.
"""
from .decentralised import MERGES, bytes_per_sample, merge_layers, train_decentralised
from .launch import free_port, spawn
from .sharded import ShardedLayer, gather_layer, merge_shards, shard_bounds, shard_layer, split_layer

__all__ = ["ShardedLayer", "shard_layer", "split_layer", "gather_layer", "merge_shards", "shard_bounds",
           "MERGES", "merge_layers", "train_decentralised", "bytes_per_sample", "spawn", "free_port"]
