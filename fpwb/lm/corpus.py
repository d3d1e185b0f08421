"""Two text corpora that are on every machine with Python, and differ clearly in kind.

- ``"code"`` (corpus A): the source of the standard library's top-level modules (``*.py`` in the
  folder of ``os.py``): Python code with its comments and docstrings.
- ``"prose"`` (corpus B): the texts of Python's interactive help topics (``pydoc_data.topics``,
  what ``help("if")`` prints): English reference prose, with some code in it.

Code and English prose differ in vocabulary, line structure, indentation and punctuation, so a
model pretrained on A sees a real shift on B while both stay ASCII text. Held-out split: the
documents (sorted by name) are joined and cut into blocks of ``BLOCK_LINES`` lines; every
``TEST_EVERY``-th block is test, the others train. So test text is text the model never saw,
from all over the corpus, and about a tenth of it.
"""
from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

import torch

CORPORA = ("code", "prose")
SPLITS = ("train", "test")
#: Every TEST_EVERY-th block of BLOCK_LINES lines is held out.
TEST_EVERY = 10
BLOCK_LINES = 100


def _documents(name: str) -> list[tuple[str, str]]:
    """(name, text) of every document of a corpus, sorted by name."""
    if name == "code":
        folder = Path(os.__file__).parent
        return [(p.name, p.read_text(encoding="utf-8", errors="replace"))
                for p in sorted(folder.glob("*.py"))]
    from pydoc_data.topics import topics
    return sorted(topics.items())


def _check(name, split):
    if name not in CORPORA:
        raise ValueError(f"corpus must be one of {CORPORA}, got {name!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


@lru_cache(maxsize=None)
def corpus_text(name: str, split: str = "train") -> str:
    """One split of a corpus: its blocks of lines (see the module docstring), joined."""
    _check(name, split)
    lines = "\n\n".join(text for _, text in _documents(name)).splitlines(keepends=True)
    blocks = ["".join(lines[i:i + BLOCK_LINES]) for i in range(0, len(lines), BLOCK_LINES)]
    test = split == "test"
    return "".join(b for i, b in enumerate(blocks) if (i % TEST_EVERY == TEST_EVERY - 1) == test)


def corpus_ids(name: str, split: str = "train", encode=None) -> torch.Tensor:
    """A corpus split as token ids (T,), long: its UTF-8 bytes, or ``encode(text)``."""
    text = corpus_text(name, split)
    if encode is not None:
        return encode(text)
    return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).long()


def digest(name: str) -> str:
    """A short hash of a corpus's training text: part of a checkpoint's cache key."""
    return hashlib.sha256(corpus_text(name, "train").encode("utf-8")).hexdigest()[:16]


def random_windows(ids: torch.Tensor, context: int, batch_size: int, n_batches: int, *, seed: int = 0):
    """``n_batches`` batches of ``batch_size`` random windows of ``context + 1`` consecutive tokens
    from ids (T,), seeded: an iterator of (batch_size, context + 1) long tensors."""
    if len(ids) < context + 2:
        raise ValueError(f"need more than {context + 1} tokens for windows of {context + 1}, got {len(ids)}")
    generator = torch.Generator().manual_seed(seed)
    offsets = torch.arange(context + 1)
    for _ in range(n_batches):
        starts = torch.randint(0, len(ids) - context - 1, (batch_size, 1), generator=generator)
        yield ids[starts + offsets]
