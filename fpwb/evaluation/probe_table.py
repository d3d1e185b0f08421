"""The probe table: Frontprop against baselines, every size x readout x seed, on one protocol.

The upstream protocol: train one FpLinear for ``epochs`` passes over the training set, freeze it,
embed train and test, fit a linear probe on the training features, report test accuracy. Here
the same is done for each baseline of ``fpwb.baselines``, for the supervised backprop layer of
``fpwb.evaluation.similarity`` (the upper reference), for Forward-Forward (``fpwb.baselines.forward_forward``, opt-in:
it costs several times a Frontprop layer) and for raw pixels, with every readout of
``fpwb.evaluation.probes``, and a cosine k-NN probe besides. With the backprop layer in the run, each other
layer's ``cka`` says how alike its features and the backprop layer's are (``linear_cka``).
"""
from __future__ import annotations

import csv
import statistics
import time

import torch
from tqdm.auto import tqdm

from .. import baselines

from . import diagnostics
from ..data import flatten, load
from ..baselines.forward_forward import forward_forward
from ..layers.linear import FpLinear
from .probes import READOUTS, knn_probe, linear_probe
from .protocol import features, fit
from .similarity import backprop_layer, linear_cka

#: Every method, in the order of the summary tables.
ALL_METHODS = ("frontprop", "forward_forward", "backprop", "random", "kmeans", "pca", "raw")
#: The default run: every method but Forward-Forward (on digits it trains 5-10x as long as a
#: Frontprop layer of 45 epochs; ask for it in ``methods``).
METHODS = tuple(m for m in ALL_METHODS if m != "forward_forward")

#: The columns of a row, in order.
COLUMNS = ("dataset", "method", "rule", "size", "features", "readout", "seed", "probe_acc", "knn_acc",
           "probe_iters", "probe_converged", "fired", "learned", "active", "zeros", "redundant_pairs",
           "cka", "train_s", "probe_s")
#: The mark of a Frontprop configuration where fewer than half of the neurons learned.
FEW_LEARNED_MARK = "†"


def _model(method, X, y, size, seed, epochs, w_boost, t_decay, mode, rule):
    """(model, learned share) a method builds from the training inputs X (n, D) and, for the
    supervised ones, labels y: the layer (a ForwardForward for ``forward_forward``); the share of
    neurons that learned for Frontprop (``fpwb.evaluation.protocol.fit``), else None."""
    if method == "frontprop":
        layer = FpLinear(X.shape[1], size, w_boost=w_boost, t_decay=t_decay, mode=mode, seed=seed,
                         **({} if rule == "frontprop" else {"rule": rule}))
        trained = fit(layer, X, epochs=epochs, seed=seed, progress=False)
        return trained.model, trained.learned_share
    return _baseline(method, X, y, size, seed), None


def _baseline(method, X, y, size, seed):
    if method == "random":
        return baselines.random_layer(X.shape[1], size, seed)
    if method == "kmeans":
        return baselines.kmeans_layer(X, size, seed)
    if method == "backprop":
        return backprop_layer(X, y, size, seed)
    if method == "forward_forward":
        return forward_forward(X, y, size, seed)
    return baselines.pca_layer(X, size, seed)


def _readouts(method, readouts):
    """The readouts a method is probed with: raw pixels and Forward-Forward's features with the
    neutral label are one each; only Frontprop learned thresholds for ``fired``."""
    if method == "raw":
        return ("pixels",)
    if method == "forward_forward":
        return ("neutral",)
    return tuple(r for r in readouts if r != "fired" or method == "frontprop")


def _split(dataset, root):
    """(name, X_train (n, D), y_train, X_test (m, D), y_test) from a name or a 4-tuple."""
    if isinstance(dataset, str):
        (Xtr, ytr), (Xte, yte) = load(dataset, "train", root), load(dataset, "test", root)
        name = dataset
    elif isinstance(dataset, (tuple, list)) and len(dataset) == 4:
        Xtr, ytr, Xte, yte = dataset
        name = "custom"
    else:
        raise ValueError("dataset must be a name for fpwb.data.load or a tuple "
                         "(X_train, y_train, X_test, y_test)")
    return name, flatten(Xtr).float(), ytr, flatten(Xte).float(), yte


def probe_table(dataset, sizes=(20, 100, 200, 500, 1000), epochs: int = 1, w_boost: float = 0.01,
                t_decay: float = 0.0001, readouts=READOUTS, seeds=(0,), methods=METHODS, *,
                rules=("frontprop",), mode: str = "sequential", knn_k: int = 5, knn_test: int | None = None,
                root="data", progress: bool = True, on_row=None) -> list[dict]:
    """Run the protocol; returns a tidy table, one dict per method x size x readout x seed.

    dataset: a name for ``fpwb.data.load`` (its train and test splits) or a tuple
    (X_train, y_train, X_test, y_test). Frontprop: an FpLinear of ``size`` neurons with
    ``w_boost``, ``t_decay`` and ``mode``, ``epochs`` passes over the training set in seeded
    shuffled order. Baselines (``fpwb.baselines``) have no learned thresholds, so they skip the
    ``fired`` readout; ``raw`` is one row (readout ``pixels``, size = pixel count).
    methods: some of ALL_METHODS; METHODS (the default) leaves out ``forward_forward``.
    ``backprop``: ``fpwb.evaluation.similarity.backprop_layer`` of ``size`` neurons trained on the labels
    (its defaults: 10 epochs of Adam), every readout but ``fired``. ``forward_forward``:
    ``fpwb.baselines.forward_forward.forward_forward``, two layers of ``size`` neurons trained on the labels
    (its defaults: 30 epochs), one row (readout ``neutral``: both layers' activities for the image
    with the neutral label, 2 x size features). ``epochs``, ``w_boost``, ``t_decay`` and ``mode``
    are Frontprop's only. rules: the learning rules of the Frontprop layers (names the layers
    take as ``rule=``), one set of Frontprop rows per rule.
    knn_test: score the k-NN probe on the first knn_test test samples only (it costs
    test x train x features); None for all. on_row: called with each finished row (to save
    partial results of a long run).

    Row fields (COLUMNS): rule (Frontprop rows: the rule's name; None otherwise), probe_acc (linear probe, ``fpwb.evaluation.probes.linear_probe``'s protocol),
    knn_acc, probe_iters and probe_converged, fired (share of neurons that fired while learning;
    Frontprop only), learned (share of neurons whose weights moved from their initial values,
    ``fpwb.evaluation.diagnostics.learned_share``; Frontprop only), active (share of features non-zero on at least one test sample), zeros
    (share of zero entries in the test features: how sparse each sample's features are),
    redundant_pairs (weight pairs with cosine > 0.95; None for Forward-Forward), cka (when
    ``backprop`` is in the run: linear CKA between the test features of this method's model and
    those of the backprop layer of the same size and seed, both with the ``relu`` readout, or
    ``neutral`` for Forward-Forward; one value per model, whatever the row's readout; None for
    the backprop layer itself and raw pixels), train_s (building the layer), probe_s (embedding
    and both probes).
    """
    unknown = set(methods) - set(ALL_METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; expected some of {ALL_METHODS}")
    rules = tuple(rules)
    if not rules or not all(isinstance(r, str) and r for r in rules):
        raise ValueError(f"rules must be a non-empty list of rule names, got {rules!r}")
    unknown = set(readouts) - set(READOUTS)
    if unknown:
        raise ValueError(f"unknown readouts {sorted(unknown)}; expected some of {READOUTS}")
    name, Xtr, ytr, Xte, yte = _split(dataset, root)
    knn_slice = slice(None, knn_test)
    # Size by size, so that a run cut short has compared every method at the sizes it finished;
    # the backprop layer first in each, as the reference of the others' cka.
    layered = sorted((m for m in methods if m != "raw"), key=lambda m: m != "backprop")
    jobs = [(m, rule, size, seed) for size in sizes for seed in seeds for m in layered
            for rule in (rules if m == "frontprop" else (None,))]
    jobs += [("raw", None, Xtr.shape[1], None)] if "raw" in methods else []
    rows = []
    reference = None  # the backprop layer's relu test features at the current size and seed
    bar = tqdm(jobs, desc=f"probe table ({name})", disable=not progress)
    for method, rule, size, seed in bar:
        bar.set_postfix_str(f"{method}{'' if rule in (None, 'frontprop') else ' ' + rule} {size}"
                            + ("" if seed is None else f" seed {seed}"))
        start = time.perf_counter()
        model, learned = (None, None) if method == "raw" else _model(
            method, Xtr, ytr, size, seed, epochs, w_boost, t_decay, mode, rule)
        train_s = time.perf_counter() - start
        cka = None
        if method == "backprop":
            reference = features(model, Xte, "relu")
        elif model is not None and "backprop" in methods:
            own = features(model, Xte, "neutral" if method == "forward_forward" else "relu")
            cka = linear_cka(own, reference)
        for readout in _readouts(method, readouts):
            start = time.perf_counter()
            Ftr, Fte = features(model, Xtr, readout), features(model, Xte, readout)
            probe = linear_probe(Ftr, ytr, Fte, yte)
            knn = knn_probe(Ftr, ytr, Fte[knn_slice], yte[knn_slice], k=knn_k)
            row = {"dataset": name, "method": method, "rule": rule, "size": size, "features": Ftr.shape[1],
                   "readout": readout, "seed": seed, "probe_acc": probe["accuracy"],
                   "knn_acc": knn["accuracy"], "probe_iters": probe["iterations"],
                   "probe_converged": probe["converged"],
                   "fired": diagnostics.fired_share(model) if method == "frontprop" else None,
                   "learned": learned,
                   "active": float((Fte != 0).any(0).float().mean()),
                   "zeros": float((Fte == 0).float().mean()),
                   "redundant_pairs": diagnostics.redundancy(model)["pairs"]
                   if isinstance(model, FpLinear) else None,
                   "cka": cka, "train_s": train_s, "probe_s": time.perf_counter() - start}
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows


def write_csv(rows: list[dict], path) -> None:
    """The tidy table as CSV, columns in COLUMNS order."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _cell(values, percent=True):
    """Mean (and spread over seeds) of a column's values, formatted for a table."""
    values = [v for v in values if v is not None]
    if not values:
        return ""
    scale, digits = (100, 1) if percent else (1, 2)
    text = f"{statistics.fmean(values) * scale:.{digits}f}"
    return text + (f" ± {statistics.stdev(values) * scale:.{digits}f}" if len(values) > 1 else "")


def few_learned(rows: list[dict]) -> bool:
    """True when these rows (one Frontprop configuration over seeds) report a mean share of
    learned neurons below one half: the configuration is mostly an untrained random layer."""
    shares = [r["learned"] for r in rows if r.get("learned") is not None]
    return bool(shares) and statistics.fmean(shares) < diagnostics.FEW_LEARNED


def _label(method, rule, mine):
    if method == "raw":
        return f"raw pixels ({mine[0]['features']})"
    return method if rule in (None, "frontprop") else f"{method} ({rule})"


def summary_markdown(rows: list[dict], value: str = "probe_acc") -> str:
    """One markdown table of ``value`` (accuracies in %): a line per method x rule x readout, a
    column per size; mean ± std over seeds where there are several. Raw pixels: the same number in
    every column. Lines with no value at all (the backprop layer's own ``cka``) are left out.
    A Frontprop cell where fewer than half of the neurons learned (mean ``learned`` < 0.5) is
    marked FEW_LEARNED_MARK, with a note under the table."""
    sizes = sorted({r["size"] for r in rows if r["method"] != "raw"})
    lines = [f"| method | readout | " + " | ".join(str(s) for s in sizes) + " |",
             "|---|---|" + "---|" * len(sizes)]
    keys = sorted(dict.fromkeys((r["method"], r.get("rule"), r["readout"]) for r in rows),
                  key=lambda key: (ALL_METHODS.index(key[0]), str(key[1]),
                                   (READOUTS + ("neutral", "pixels")).index(key[2])))
    percent = value.endswith("_acc")
    flagged = False
    for method, rule, readout in keys:
        mine = [r for r in rows if (r["method"], r.get("rule"), r["readout"]) == (method, rule, readout)]
        if method == "raw":
            cells = [_cell([r[value] for r in mine], percent)] * len(sizes)
        else:
            cells = []
            for size in sizes:
                at = [r for r in mine if r["size"] == size]
                cell = _cell([r[value] for r in at], percent)
                if cell and few_learned(at):
                    cell += " " + FEW_LEARNED_MARK
                    flagged = True
                cells.append(cell)
        if not any(cells):
            continue
        lines.append(f"| {_label(method, rule, mine)} | {readout} | " + " | ".join(cells) + " |")
    if flagged:
        lines += ["", f"{FEW_LEARNED_MARK} fewer than half of the neurons learned (their weights never "
                      f"moved from the initial values): mostly an untrained random layer."]
    return "\n".join(lines)


def rows_markdown(rows: list[dict]) -> str:
    """The tidy table itself as markdown, every row and column."""
    def fmt(key, v):
        if v is None:
            return ""
        if key in ("probe_acc", "knn_acc"):
            return f"{100 * v:.2f}"
        if isinstance(v, float):
            return f"{v:.3f}" if key in ("fired", "learned", "active", "zeros", "cka") else f"{v:.1f}"
        return str(v)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(fmt(k, r.get(k)) for k in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)
