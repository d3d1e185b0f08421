"""TensorBoard records of sweep runs: one TensorBoard run per grid point, for the HParams view.

Each run folder of a sweep gets an event file (``torch.utils.tensorboard.SummaryWriter``) with
the run's parameters as hyper-parameters (the grid's values as their discrete domains) and, as
metrics, every number of its ``results.json`` (``results/<dotted key>``) plus
``run/ok`` (1 or 0) and ``run/wall_time`` (seconds). Browse a sweep with::

    tensorboard --logdir reports/sweeps/<sweep>/runs
"""
from __future__ import annotations

import json
from pathlib import Path

from .tables import flatten, is_number

#: Metric tags besides the results: whether the run succeeded and how long it took.
OK_TAG, WALL_TIME_TAG = "run/ok", "run/wall_time"
RESULTS_PREFIX = "results/"


def _hparam(value):
    """A value TensorBoard's HParams can hold (bool, number, string): others as JSON text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True)


def hparams_of(parameters: dict, grid: dict) -> tuple[dict, dict]:
    """The hyper-parameters of a run (``out_dir`` left out) and the discrete domains of the
    swept ones whose values share one type."""
    values = {k: _hparam(v) for k, v in parameters.items() if k != "out_dir"}
    domains = {}
    for name, options in grid.items():
        options = [_hparam(v) for v in options]
        if name in values and values[name] is not None and all(type(v) is type(values[name]) for v in options):
            domains[name] = options
    return values, domains


def metrics_of(record: dict, results) -> dict:
    """The run's metrics: every finite number of its results, its status and wall time."""
    metrics = {OK_TAG: float(record["status"] == "ok"), WALL_TIME_TAG: float(record["wall_time"])}
    if isinstance(results, dict):
        for key, value in flatten(results).items():
            if is_number(value):
                metrics[f"{RESULTS_PREFIX}{key}"] = float(value)
    return metrics


def write_run(folder, parameters: dict, grid: dict, record: dict, results) -> Path:
    """Write the run's TensorBoard event file into ``folder`` (what ``SummaryWriter.add_hparams``
    writes, without the extra sub-folder it makes); returns the event file."""
    from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when recording
    from torch.utils.tensorboard.summary import hparams

    folder = Path(folder)
    values, domains = hparams_of(parameters, grid)
    metrics = metrics_of(record, results)
    before = set(folder.glob("events.out.tfevents.*"))
    with SummaryWriter(log_dir=str(folder)) as writer:
        for summary in hparams(values, metrics, domains):
            writer.file_writer.add_summary(summary)
        for tag, value in metrics.items():
            writer.add_scalar(tag, value)
    (event_file,) = set(folder.glob("events.out.tfevents.*")) - before
    return event_file
