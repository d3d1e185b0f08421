"""Does a layer find the patterns? Pattern coverage of FpLinear weights, and its rate over seeds."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..data.patterns import SIMPLE_PATTERNS, simple_patterns
from ..layers.linear import FpLinear


def pattern_match(weight: torch.Tensor, patterns: torch.Tensor = SIMPLE_PATTERNS) -> torch.Tensor:
    """Best cosine between each pattern and any neuron's weights.  weight (N, D) -> (P,)"""
    flat = patterns.flatten(1).to(weight.dtype)
    flat = flat / flat.norm(dim=1, keepdim=True)  # (P, D)
    w = weight / weight.norm(dim=1, keepdim=True)
    return (flat @ w.T).max(dim=1).values


def train_on_patterns(seed: int, *, n_neurons: int = 20, n_samples: int = 20_000, probs=None,
                      noise: float = 0.0, **layer_kwargs) -> FpLinear:
    """One FpLinear trained on a stream of the simple patterns; the stream and the layer share
    the seed."""
    images, _ = simple_patterns(n_samples, probs=probs, noise=noise, seed=seed)
    layer = FpLinear(images[0].numel(), n_neurons, seed=seed, **layer_kwargs)
    layer(images.flatten(1))
    return layer


def learns_patterns(seed: int, *, cosine: float = 0.95, **kwargs) -> bool:
    """True if, after :func:`train_on_patterns`, every pattern has a neuron whose weights reach
    ``cosine`` with it."""
    return bool((pattern_match(train_on_patterns(seed, **kwargs).weight) >= cosine).all())


def why_missed(layer: FpLinear, cosine: float = 0.95) -> dict:
    """What a layer that missed patterns looks like: the missed patterns, how many neurons
    never fired, how many of those have a negative cosine with every pattern (a threshold
    decays toward 0 but never below it, so such a neuron can never fire), and how many
    neurons hold a pattern (cosine >= ``cosine``)."""
    flat = SIMPLE_PATTERNS.flatten(1).to(layer.weight.dtype)
    cosines = (flat / flat.norm(dim=1, keepdim=True)) @ layer.weight.T  # (P, N)
    never = layer.fire_count == 0
    return {"missed": (cosines.max(dim=1).values < cosine).nonzero().flatten().tolist(),
            "never_fired": int(never.sum()),
            "never_fired_all_negative": int((never & (cosines.max(dim=0).values < 0)).sum()),
            "holding_a_pattern": int((cosines.max(dim=0).values >= cosine).sum())}


def success_rate(seeds, progress: bool = False, **kwargs) -> tuple[int, int]:
    """(successes, runs) of :func:`learns_patterns` over the given seeds."""
    seeds = list(seeds)
    wins = sum(learns_patterns(s, **kwargs) for s in tqdm(seeds, disable=not progress, leave=False))
    return wins, len(seeds)
