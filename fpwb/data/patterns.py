"""The simple 7x7 binary patterns of the Frontprop experiments, and a seeded stream of them."""
from __future__ import annotations

import torch

_ART = {
    "x": """
        #.....#
        .#...#.
        ..#.#..
        ...#...
        ..#.#..
        .#...#.
        #.....#""",
    "plus": """
        ...#...
        ...#...
        ...#...
        #######
        ...#...
        ...#...
        ...#...""",
    "ring": """
        ..###..
        .#...#.
        #.....#
        #.....#
        #.....#
        .#...#.
        ..###..""",
    "vline": """
        .#.....
        .#.....
        .#.....
        .#.....
        .#.....
        .#.....
        .#.....""",
    "block3": """
        ###....
        ###....
        ###....
        .......
        .......
        .......
        .......""",
    "block2": """
        .......
        ....##.
        ....##.
        .......
        .......
        .......
        .......""",
}

PATTERN_NAMES = tuple(_ART)


def _parse(art: str) -> torch.Tensor:
    rows = [line.strip() for line in art.strip().splitlines()]
    return torch.tensor([[c == "#" for c in row] for row in rows], dtype=torch.float32)


#: The six upstream patterns, (6, 7, 7) float 0/1, in the order of PATTERN_NAMES.
SIMPLE_PATTERNS = torch.stack([_parse(art) for art in _ART.values()])


def simple_patterns(n: int, probs=None, noise: float = 0.0, patterns=None, seed=None):
    """Draw n images from a set of patterns; returns (images (n, 1, H, W) float32, labels (n,)).

    probs: relative frequency of each pattern (any positive scale, e.g. (10, 1, 1, 1, 1, 1));
    uniform by default. noise: standard deviation of Gaussian noise added to each image.
    patterns: your own (P, H, W) tensor instead of SIMPLE_PATTERNS. seed: int or torch.Generator;
    the same seed gives the same stream.
    """
    patterns = SIMPLE_PATTERNS if patterns is None else torch.as_tensor(patterns, dtype=torch.float32)
    if patterns.dim() != 3 or patterns.shape[0] < 1:
        raise ValueError(f"patterns must be shaped (P, H, W), got {tuple(patterns.shape)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    probs = torch.ones(len(patterns)) if probs is None else torch.as_tensor(probs, dtype=torch.float64)
    if probs.shape != (len(patterns),) or not bool(torch.isfinite(probs).all()) \
            or bool((probs < 0).any()) or float(probs.sum()) <= 0:
        raise ValueError(f"probs must be {len(patterns)} non-negative numbers with a positive sum, "
                         f"got {probs.tolist()}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    generator = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(
        0 if seed is None else seed)
    labels = torch.multinomial(probs.float(), n, replacement=True, generator=generator) if n else \
        torch.zeros(0, dtype=torch.long)
    images = patterns[labels].unsqueeze(1).clone()
    if noise > 0:
        images += noise * torch.randn(images.shape, generator=generator)
    return images, labels
