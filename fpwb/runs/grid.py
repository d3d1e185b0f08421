"""Sweep grids: the YAML file, its validation, the runs it expands into and their folder names.

A grid file lists the values of each swept parameter under ``grid`` and constant parameters under
``fixed``; ``metric`` optionally names the results.json entry the summary figure shows::

    grid:
      w_boost: [0.02, 0.05]
      t_decay: [1e-4, 1e-3]
    fixed:
      smoke: true
      seed: 0
    metric: headline.accuracy     # nested results.json entries are named with dots
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass

import yaml

GRID_KEYS = ("grid", "fixed", "metric")
OUT_PARAM = "out_dir"
MAX_NAME = 120


class _GridLoader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` as a float (plain YAML 1.1 wants ``1.0e-3``, else a string)."""


_GridLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def canonical(value) -> str:
    """One JSON text per value (sorted keys, no spaces): what identities are hashed from."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def digest(value) -> str:
    return hashlib.sha256(canonical(value).encode()).hexdigest()


def label(value) -> str:
    """A grid value as it appears in run names, tables and figure ticks."""
    return value if isinstance(value, str) else json.dumps(value)


@dataclass(frozen=True)
class Grid:
    """Values per swept parameter, constant parameters, and the results entry to plot."""

    grid: dict
    fixed: dict
    metric: str | None = None

    @classmethod
    def load(cls, path) -> Grid:
        """Read a grid file (YAML with ``grid``, optional ``fixed`` and ``metric``)."""
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.load(f, Loader=_GridLoader)
        except FileNotFoundError:
            raise ValueError(f"grid file {str(path)!r} does not exist") from None
        except yaml.YAMLError as exc:
            raise ValueError(f"grid file {str(path)!r} is not valid YAML: {exc}") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data, source: str = "grid") -> Grid:
        if not isinstance(data, dict) or not isinstance(data.get("grid"), dict) or not data["grid"]:
            raise ValueError(f"{source}: expected a mapping with a non-empty 'grid' mapping of "
                             f"parameter -> list of values")
        unknown = set(data) - set(GRID_KEYS)
        if unknown:
            raise ValueError(f"{source}: unknown keys {sorted(unknown)}; expected {list(GRID_KEYS)}")
        grid, fixed, metric = data["grid"], data.get("fixed") or {}, data.get("metric")
        if not isinstance(fixed, dict):
            raise ValueError(f"{source}: 'fixed' must map parameter -> value, got {fixed!r}")
        if metric is not None and not isinstance(metric, str):
            raise ValueError(f"{source}: 'metric' must be the name of a results.json entry, got {metric!r}")
        for name, values in grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"{source}: grid.{name} must be a non-empty list of values, got {values!r}")
            labels = [label(v) for v in values]
            if len(set(labels)) < len(labels):
                raise ValueError(f"{source}: grid.{name} repeats a value (or two values name the "
                                 f"same run): {values!r}")
        both = set(grid) & set(fixed)
        if both:
            raise ValueError(f"{source}: {sorted(both)} appear in both grid and fixed")
        if OUT_PARAM in grid or OUT_PARAM in fixed:
            raise ValueError(f"{source}: {OUT_PARAM} is set by the sweep (each run's folder); remove it")
        try:
            canonical([grid, fixed])
        except TypeError as exc:
            raise ValueError(f"{source}: values must be numbers, strings, booleans, null, lists or "
                             f"mappings ({exc})") from None
        return cls(dict(grid), dict(fixed), metric)

    def combinations(self) -> list[dict]:
        """Every combination of grid values, the first parameter varying slowest."""
        return [dict(zip(self.grid, values)) for values in itertools.product(*self.grid.values())]

    def __len__(self) -> int:
        return math.prod(len(v) for v in self.grid.values())

    def __repr__(self) -> str:
        shape = " x ".join(f"{k}[{len(v)}]" for k, v in self.grid.items())
        return f"Grid({shape} = {len(self)} runs, fixed={self.fixed!r})"


def run_name(values: dict) -> str:
    """Folder name of a run from its grid values, e.g. ``w_boost=0.05__t_decay=0.001``.

    A name that had to be shortened or had characters outside ``[A-Za-z0-9._=+-]`` replaced gets
    an 8-character hash of the values, so names stay unique.
    """
    text = "__".join(f"{k}={label(v)}" for k, v in values.items())
    safe = re.sub(r"[^A-Za-z0-9._=+-]", "-", text)[:MAX_NAME]
    return safe if safe == text else f"{safe}-{digest(values)[:8]}"


@dataclass(frozen=True)
class Run:
    """One notebook execution: its folder name, grid values and every parameter it gets."""

    name: str
    values: dict
    parameters: dict
