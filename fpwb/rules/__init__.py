"""The learning rules, one module each; every rule has a plain reference step (``Rule.step``).

- ``frontprop``: the plain rule (default); ``oja``: Oja's rule; ``per_neuron_rate``: a 1/n rate per
  neuron (online k-means with one winner); ``homeostatic``: thresholds that track a target firing
  rate; ``soft_wta``: SoftHebb's soft winner-take-all with anti-Hebbian losers; ``rank_k``:
  Krotov-Hopfield rank-k anti-Hebbian inhibition.
- ``base``: the ``Rule`` class, what a rule declares for the fast paths (see its docstring);
  ``competitive``: the shared move of soft_wta and rank_k.

Layers take ``rule=`` a name (``names()``) or a ``Rule`` object (a user's own subclass works:
``examples/my_rule.py``). May import: torch, numba, numpy; nothing else of fpwb.
"""
from .base import Rule
from .frontprop import Frontprop
from .homeostatic import Homeostatic
from .oja import Oja
from .per_neuron_rate import PerNeuronRate
from .rank_k import RankK
from .soft_wta import SoftWTA

REGISTRY = {cls.name: cls for cls in (Frontprop, Oja, SoftWTA, RankK, PerNeuronRate, Homeostatic)}


def names() -> list[str]:
    """The built-in rules' names."""
    return list(REGISTRY)


def get(rule) -> Rule:
    """A rule object from a name (with its default hyper-parameters) or a Rule (returned as is)."""
    if isinstance(rule, Rule):
        return rule
    if isinstance(rule, str) and rule in REGISTRY:
        return REGISTRY[rule]()
    raise ValueError(f"rule must be one of {names()} or a fpwb.rules.Rule, got {rule!r}")


__all__ = ["Rule", "REGISTRY", "names", "get", "Frontprop", "Oja", "SoftWTA", "RankK",
           "PerNeuronRate", "Homeostatic"]
