"""Helpers every notebook shares: a fixed working directory, the device, and where results go.

Notebooks run from the repository root whichever tool runs them (papermill, nbval, JupyterLab), so
relative paths such as ``reports/...`` or ``data/`` mean the same thing everywhere. Each notebook
writes its figures and a ``results.json`` into its ``out_dir``; the report runner reads the
``headline`` numbers of that file into ``index.html``.

``reports/<notebook>/`` belongs to ``make report``: the runners (``fpwb report``, ``fpwb sweep``)
set ``FPWB_RUNNER`` in the kernel's environment, and a run without it (JupyterLab, plain
papermill) that points into ``reports/`` writes into ``reports/interactive/`` instead, so a report
folder always matches its HTML page.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

#: The file that marks the repository root.
ROOT_MARKER = "pyproject.toml"
#: Set (to "report" or "sweep") in the environment of the kernels fpwb's runners start.
RUNNER_ENV = "FPWB_RUNNER"
#: The report folder that only the runners write into, and where interactive runs go instead.
REPORTS = "reports"
INTERACTIVE = "interactive"
_announced = set()


def repo_root(start=None) -> Path:
    """The nearest folder holding pyproject.toml, from ``start`` (default: this package) upward."""
    start = Path(start or Path(__file__).resolve().parent).resolve()
    for folder in (start, *start.parents):
        if (folder / ROOT_MARKER).is_file():
            return folder
    raise ValueError(f"no {ROOT_MARKER} found in {start} or any folder above it; "
                     f"fpwb notebooks run from a checkout of the fpwb repository")


def workdir() -> Path:
    """Change to the repository root and return it: the first thing every notebook does."""
    root = repo_root()
    os.chdir(root)
    return root


def resolve_device(device: str = "auto") -> torch.device:
    """A torch.device from a notebook parameter; "auto" picks CUDA when there is one, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was asked for but torch sees no CUDA device")
    return device


def interactive_dir(out_dir) -> Path:
    """Where a run outside fpwb's runners writes ``out_dir``: a folder under ``reports/`` (the
    report's) moves to ``reports/interactive/``; any other folder stays as it is."""
    path = Path(out_dir).resolve()
    reports = repo_root() / REPORTS
    if path != reports and reports not in path.parents:
        return Path(out_dir)
    relative = path.relative_to(reports)
    if relative.parts[:1] == (INTERACTIVE,):
        return path
    return reports / INTERACTIVE / relative


def output_dir(out_dir) -> Path:
    """The notebook's output folder, created when missing: ``out_dir`` itself under fpwb's
    runners, :func:`interactive_dir` of it otherwise (said once per folder)."""
    path = Path(out_dir)
    if not os.environ.get(RUNNER_ENV):
        path = interactive_dir(path)
        if path != Path(out_dir) and path not in _announced:
            _announced.add(path)
            print(f"interactive run: writing into {path} ({out_dir} belongs to `make report`)")
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig, out_dir, name: str) -> Path:
    """Write a matplotlib Figure as ``out_dir/name.png`` and return the path."""
    path = output_dir(out_dir) / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _plain(value):
    """JSON-ready copies of tensors, numpy values and NaN (written as null)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):  # torch / numpy scalars and arrays
        return _plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def save_results(out_dir, headline: dict, *, key_figure: str | None = None, **details) -> Path:
    """Write ``out_dir/results.json``: ``{"headline": ..., "key_figure": ..., **details}``.

    headline: the few numbers the report's index shows (name -> number or short string).
    key_figure: the file name (in out_dir) of the figure that stands for the notebook.
    """
    bad = {k: v for k, v in headline.items() if isinstance(v, (dict, list, tuple))}
    if bad:
        raise ValueError(f"headline values must be single numbers or strings, got {bad}")
    folder = output_dir(out_dir)
    if key_figure is not None and not (folder / key_figure).is_file():
        raise ValueError(f"key_figure {key_figure!r} is not a file in {folder}; save it first")
    path = folder / "results.json"
    results = {"headline": headline, "key_figure": key_figure, **details}
    path.write_text(json.dumps(_plain(results), indent=2) + "\n")
    return path


def respond(layer, x):
    """The layer's output on x with its current state, without learning; its mode is restored."""
    training = layer.training
    layer.eval()
    try:
        return layer(x)
    finally:
        layer.train(training)
