"""Does a layer find the patterns? Pattern coverage of FpLinear weights, and its rate over seeds."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .data.patterns import SIMPLE_PATTERNS, simple_patterns
from .linear import FpLinear


def pattern_match(weight: torch.Tensor, patterns: torch.Tensor = SIMPLE_PATTERNS) -> torch.Tensor:
    """Best cosine between each pattern and any neuron's weights.  weight (N, D) -> (P,)"""
    flat = patterns.flatten(1).to(weight.dtype)
    flat = flat / flat.norm(dim=1, keepdim=True)  # (P, D)
    w = weight / weight.norm(dim=1, keepdim=True)
    return (flat @ w.T).max(dim=1).values


def learns_patterns(seed: int, *, n_neurons: int = 20, n_samples: int = 20_000, probs=None,
                    noise: float = 0.0, cosine: float = 0.95, **layer_kwargs) -> bool:
    """Train one FpLinear on a stream of the simple patterns; True if every pattern has a neuron
    whose weights reach ``cosine`` with it. The stream and the layer share the seed."""
    images, _ = simple_patterns(n_samples, probs=probs, noise=noise, seed=seed)
    layer = FpLinear(images[0].numel(), n_neurons, seed=seed, **layer_kwargs)
    layer(images.flatten(1))
    return bool((pattern_match(layer.weight) >= cosine).all())


def success_rate(seeds, progress: bool = False, **kwargs) -> tuple[int, int]:
    """(successes, runs) of :func:`learns_patterns` over the given seeds."""
    seeds = list(seeds)
    wins = sum(learns_patterns(s, **kwargs) for s in tqdm(seeds, disable=not progress, leave=False))
    return wins, len(seeds)
