"""Figures of Frontprop layers and experiments. Every function returns a matplotlib Figure.

Built with matplotlib's object API (``matplotlib.figure.Figure``), never pyplot: nothing is shown
or kept open behind your back; in a notebook, make the Figure the cell's last value (or
``display(fig)``) to see it, ``fig.savefig(...)`` to keep it.
"""
from __future__ import annotations

import itertools
import math
from collections import defaultdict

import matplotlib
import matplotlib.ticker
import numpy as np
import torch
from matplotlib.figure import Figure

from ..layers.base import FpLayer
from .recorder import Recorder

#: Diverging map for weights: 0 is white, sign shows as colour. Padding between tiles is grey.
WEIGHT_CMAP = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.8")


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def weight_tiles(source, image_shape=None) -> torch.Tensor:
    """One image per neuron: (N, H, W), or (N, H, W, 3) for 3-channel inputs.

    source: an FpLinear / FpConv2d or a weight tensor, (N, D) rows or (N, C, kH, kW) kernels.
    image_shape: (H, W) or (C, H, W) of an FpLinear's input; by default D = H * H (one channel)
    or 3 * H * H (RGB). Kernels with other than 1 or 3 channels show their channels side by side.
    """
    weight = source.weight if isinstance(source, FpLayer) else torch.as_tensor(source)
    weight = weight.detach().cpu().float()
    if weight.dim() == 2:
        n, d = weight.shape
        if image_shape is None:
            for channels in (1, 3):
                side = math.isqrt(d // channels)
                if channels * side * side == d:
                    image_shape = (channels, side, side)
                    break
            else:
                raise ValueError(f"cannot tell the image shape of {d} inputs; pass image_shape=(H, W) "
                                 f"or (C, H, W)")
        image_shape = tuple(image_shape)
        if len(image_shape) == 2:
            image_shape = (1, *image_shape)
        if len(image_shape) != 3 or math.prod(image_shape) != d:
            raise ValueError(f"image_shape {image_shape} does not hold the {d} inputs of each neuron")
        weight = weight.view(n, *image_shape)
    elif weight.dim() != 4:
        raise ValueError(f"weights must be (N, D) or (N, C, kH, kW), got {tuple(weight.shape)}")
    n, c, h, w = weight.shape
    if c == 1:
        return weight[:, 0]
    if c == 3:
        return weight.permute(0, 2, 3, 1)
    return weight.permute(0, 2, 1, 3).reshape(n, h, c * w)


def weight_mosaic(tiles: torch.Tensor, ncols: int | None = None) -> tuple[np.ndarray, float]:
    """Tiles (N, H, W[, 3]) laid out in a grid one pixel apart, and the grid's colour limit.

    Grey tiles become one float array with NaN padding, for ``imshow(..., vmin=-lim, vmax=lim)``;
    RGB tiles are mapped to [0, 1] with 0 at mid grey, ``0.5 + 0.5 * w / lim``, padding white.
    lim is the largest |w| in the grid: one symmetric scale for all tiles.
    """
    tiles = _numpy(tiles).astype(np.float32)
    n, h, w = tiles.shape[:3]
    rgb = tiles.ndim == 4
    lim = float(np.abs(tiles).max()) if tiles.size else 1.0
    lim = lim if lim > 0 else 1.0
    ncols = ncols or max(1, math.ceil(math.sqrt(n)))
    nrows = max(1, math.ceil(n / ncols))
    shape = (nrows * (h + 1) - 1, ncols * (w + 1) - 1) + ((3,) if rgb else ())
    mosaic = np.full(shape, 1.0 if rgb else np.nan, dtype=np.float32)
    if rgb:
        tiles = np.clip(0.5 + 0.5 * tiles / lim, 0.0, 1.0)
    for i in range(n):
        r, c = divmod(i, ncols)
        mosaic[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = tiles[i]
    return mosaic, lim


def firing_order(fire_count) -> torch.Tensor:
    """Neuron indices from most to least fired (ties keep index order)."""
    return torch.as_tensor(fire_count).cpu().argsort(descending=True, stable=True)


def weight_grid(source, image_shape=None, *, sort_by_firing: bool = False, fire_count=None,
            max_neurons: int | None = None, ncols: int | None = None, title: str | None = None) -> Figure:
    """Each neuron's weights as an image, all in one grid with one symmetric colour scale.

    source: an FpLinear (rows reshaped to the input's H x W, see :func:`weight_tiles`), an
    FpConv2d (kernels), or a weight tensor. sort_by_firing: most-fired neurons first, from the
    layer's ``fire_count`` (or ``fire_count`` given with a tensor); the tile order is then
    kept as ``fig.neuron_order``. max_neurons: show only the first ones (after sorting).
    """
    tiles = weight_tiles(source, image_shape)
    kernels = (source.weight if isinstance(source, FpLayer) else torch.as_tensor(source)).dim() == 4
    order = torch.arange(len(tiles))
    if sort_by_firing:
        if fire_count is None and isinstance(source, FpLayer):
            fire_count = source.fire_count
        if fire_count is None:
            raise ValueError("sort_by_firing needs firing counts: pass a layer or fire_count=")
        if len(fire_count) != len(tiles):
            raise ValueError(f"fire_count has {len(fire_count)} entries for {len(tiles)} neurons")
        order = firing_order(fire_count)
    if max_neurons is not None:
        order = order[:max_neurons]
    mosaic, lim = weight_mosaic(tiles[order], ncols)
    fig = Figure(figsize=(6, 6 * mosaic.shape[0] / mosaic.shape[1] + 0.4), layout="constrained")
    ax = fig.add_subplot()
    if mosaic.ndim == 3:
        ax.imshow(mosaic, interpolation="nearest")
    else:
        im = ax.imshow(mosaic, cmap=WEIGHT_CMAP, vmin=-lim, vmax=lim, interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.6, label="weight")
    ax.set_axis_off()
    ax.set_title(title or f"{len(order)} neurons' {'kernels' if kernels else 'weights'}"
                 + (", most fired first" if sort_by_firing else ""))
    fig.neuron_order = order
    return fig


def _history(source, field: str):
    """(samples (T,), values (T, ...)) from a Recorder or a (samples, values) pair."""
    if isinstance(source, Recorder):
        samples, values = source.samples, getattr(source, field)
    elif isinstance(source, (tuple, list)) and len(source) == 2:
        samples, values = (torch.as_tensor(v) for v in source)
    else:
        raise ValueError(f"expected a Recorder or a (samples, {field}) pair, got {type(source).__name__}")
    if len(samples) == 0 or len(values) != len(samples):
        raise ValueError(f"need at least one record, with as many {field} rows as samples; got "
                         f"{len(samples)} samples and {len(values)} rows")
    return _numpy(samples), _numpy(values)


def threshold_traces(source, *, max_lines: int = 100, title: str | None = None) -> Figure:
    """Each recorded neuron's threshold over the samples seen.

    source: a Recorder, or (samples (T,), thresholds (T, S)). FpConv2d thresholds (T, S, H, W)
    are averaged over locations. Shows the first max_lines neurons and their mean (thick black).
    """
    samples, thresholds = _history(source, "thresholds")
    thresholds = thresholds.reshape(len(samples), thresholds.shape[1] if thresholds.ndim > 1 else 1, -1)
    per_location = thresholds.shape[2] > 1
    thresholds = thresholds.mean(axis=2)  # (T, S)
    fig = Figure(figsize=(7, 3.5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(samples, thresholds[:, :max_lines], linewidth=0.8, alpha=0.7)
    ax.plot(samples, thresholds.mean(axis=1), color="black", linewidth=2, label="mean")
    ax.set_xlabel("samples seen")
    ax.set_ylabel("mean threshold over locations" if per_location else "threshold")
    ax.legend(loc="upper right")
    ax.set_title(title or f"thresholds of {min(max_lines, thresholds.shape[1])} of "
                          f"{thresholds.shape[1]} recorded neurons")
    return fig


def firing_counts(source, *, max_lines: int = 20, title: str | None = None) -> Figure:
    """Firing over time: neurons that fired in each recording interval (top), and the cumulative
    firings of the max_lines most-fired neurons (bottom).

    source: a Recorder, or (samples (T,), cumulative fire_counts (T, N)).
    """
    samples, counts = _history(source, "fire_counts")
    if isinstance(source, Recorder):
        active = _numpy(source.active)
    else:
        active = (np.diff(counts, axis=0, prepend=counts[:1]) > 0).sum(axis=1)
    fig = Figure(figsize=(7, 5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.step(samples, active, where="pre")
    top.set_ylabel("neurons that fired\nsince the last record")
    top.set_ylim(0, counts.shape[1] * 1.05)
    top.set_title(title or f"firing of {counts.shape[1]} neurons")
    most = firing_order(torch.as_tensor(counts[-1]))[:max_lines].numpy()
    bottom.plot(samples, counts[:, most], linewidth=1)
    bottom.set_xlabel("samples seen")
    bottom.set_ylabel(f"firings, top {len(most)} neurons")
    return fig


def class_responses(layer: FpLayer, images, labels, n_classes: int | None = None) -> torch.Tensor:
    """Mean response (cosine of input and weights, max over locations for FpConv2d) of each
    neuron to each class: (N, n_classes). Classes without samples give NaN. The layer is untouched."""
    from ..evaluation.probes import embed

    labels = torch.as_tensor(labels).long().cpu()
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    n_classes = n_classes or int(labels.max()) + 1
    y = embed(layer, images, readout="linear").cpu()  # (B, N) or (B, N * H_out * W_out)
    y = y.view(len(y), layer.weight.shape[0], -1).amax(dim=2)  # (B, N)
    sums = torch.zeros(n_classes, y.shape[1]).index_add_(0, labels, y)
    counts = torch.bincount(labels, minlength=n_classes).unsqueeze(1)
    return (sums / counts).T  # NaN where a class has no samples


def coverage(layer: FpLayer, images, labels, class_names=None, *, only_fired: bool = True,
             title: str | None = None) -> Figure:
    """Which patterns / classes the neurons cover.

    Each neuron is assigned the class it responds to most (:func:`class_responses`); with
    only_fired, neurons that never fired while learning are left out (their weights are still
    random). Left: mean response per neuron (columns, grouped by class) and class (rows). Right:
    neurons per class, names in red where a class has none. ``fig.neurons_per_class`` keeps the counts.
    """
    responses = class_responses(layer, images, labels)  # (N, C)
    n_classes = responses.shape[1]
    names = list(class_names) if class_names is not None else [str(c) for c in range(n_classes)]
    if len(names) != n_classes:
        raise ValueError(f"class_names has {len(names)} names for {n_classes} classes")
    keep = layer.fire_count.cpu() > 0 if only_fired else torch.ones(len(responses), dtype=torch.bool)
    best = responses.nan_to_num(-math.inf).argmax(dim=1)  # (N,)
    per_class = torch.bincount(best[keep], minlength=n_classes)
    neurons = keep.nonzero().squeeze(1)
    neurons = neurons[best[neurons].argsort(stable=True)]
    fig = Figure(figsize=(10, 0.35 * n_classes + 2), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=(3, 1))
    im = left.imshow(_numpy(responses[neurons].T), aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=left, label="mean cosine")
    left.set_yticks(range(n_classes), names)
    left.set_ylabel("class")
    left.set_xlabel(f"neuron ({'fired ones, ' if only_fired else ''}grouped by best class)")
    right.barh(range(n_classes), _numpy(per_class), color="tab:blue")
    right.set_yticks(range(n_classes), names)
    for label, count in zip(right.get_yticklabels(), per_class.tolist()):
        label.set_color("tab:red" if count == 0 else "black")
    right.invert_yaxis()
    right.set_ylabel("class")
    right.set_xlabel("neurons")
    covered = int((per_class > 0).sum())
    fig.suptitle(title or f"coverage: {covered} of {n_classes} classes have a neuron")
    fig.neurons_per_class = per_class
    return fig


def _rows(table) -> list[dict]:
    if hasattr(table, "to_dict"):  # a pandas DataFrame
        return table.to_dict("records")
    rows = list(table)
    if not all(isinstance(row, dict) for row in rows):
        raise ValueError("the table must be a pandas DataFrame or a list of dicts")
    return rows


#: Words for the probe table's columns on a figure's axis.
METRIC_WORDS = {"probe_acc": "linear-probe test accuracy", "knn_acc": "k-NN test accuracy",
                "cka": "linear CKA with the backprop layer", "learned": "share of neurons that learned"}


def accuracy_vs_neurons(table, *, metric: str = "probe_acc", size: str = "size",
                        group_by=("method", "readout"), title: str | None = None) -> Figure:
    """Accuracy against layer size from the probe table: one line per (method, readout), the mean
    over seeds with their spread (min to max) as error bars; log x axis ticked at the sizes. The
    legend names each line's method and readout.

    table: a pandas DataFrame or a list of dicts with the columns named by size, metric and
    group_by (columns missing from the table are skipped in the grouping).
    """
    rows = _rows(table)
    if not rows:
        raise ValueError("the probe table is empty")
    missing = {size, metric} - set(rows[0])
    if missing:
        raise ValueError(f"the probe table lacks the column(s) {sorted(missing)}; it has {sorted(rows[0])}")
    keys = [k for k in group_by if k in rows[0]]
    series = defaultdict(lambda: defaultdict(list))
    for row in rows:
        series[tuple(row[k] for k in keys)][row[size]].append(float(row[metric]))
    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.add_subplot()
    for group, by_size in sorted(series.items(), key=lambda item: tuple(map(str, item[0]))):
        xs = sorted(by_size)
        values = [np.asarray(by_size[x]) for x in xs]
        mean = np.array([v.mean() for v in values])
        spread = np.array([[m - v.min() for m, v in zip(mean, values)],
                           [v.max() - m for m, v in zip(mean, values)]])
        ax.errorbar(xs, mean, yerr=spread, marker="o", capsize=3,
                    label=" / ".join(map(str, group)) or metric)
    ax.set_xscale("log")
    sizes = sorted({row[size] for row in rows})
    ax.set_xticks(sizes, [str(s) for s in sizes])  # the sizes measured, as plain numbers
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("neurons in the layer")
    ax.set_ylabel(METRIC_WORDS.get(metric, metric.replace("_", " ")))
    ax.legend(fontsize="small", title=" / ".join(keys) or None, title_fontsize="small")
    ax.set_title(title or f"{METRIC_WORDS.get(metric, metric)} against the number of neurons")
    return fig


#: The baselines of a depth study and their colours (kept off the rules' colour cycle).
DEPTH_BASELINES = {"untrained": "black", "imprint": "dimgray", "kmeans": "saddlebrown"}


def probe_against_depth(summary: dict, *, data: dict | None = None, reference: str = "backprop",
                        baseline: str = "untrained", within: float = 5.0) -> Figure:
    """Linear-probe accuracy (%) on the last stage against the number of conv stages: one line
    per method, mean with ± std over seeds as error bars. Frontprop methods solid, the
    nothing-learned and k-means baselines (``DEPTH_BASELINES``) dashed, ``reference`` (backprop)
    dotted, each in a colour of its own; the legend sits outside the axes, so that no line hides
    behind it, and names the methods that diverged (no points).

    With ``baseline`` (the untrained net) in the summary a second panel zooms in on the question
    the protocol asks: each method's mean minus the baseline's at the same depth, in points (its
    own ± std as error bars), for the methods that stay within ``within`` points below it at every
    depth; the panel's title names the ones left out (they are in the first panel).

    summary: ``fpwb.nets.protocol.summary`` of a run, {(method, depth, stage): {mean, std, n, ...}}
    with probes as fractions; a diverged method (NaN) leaves a gap. data: {dataset, n_train,
    n_test}, named in the title with the number of seeds (the entries' n)."""
    last = {(m, d): e for (m, d, stage), e in summary.items() if stage == d}
    if not last:
        raise ValueError("summary holds no last-stage entries (keys (method, depth, depth)); "
                         "pass fpwb.nets.protocol.summary(rows)")
    depths = sorted({d for _, d in last})
    methods = list(dict.fromkeys(m for m, _ in last))
    gains = baseline in methods and all((baseline, d) in last for d in depths)
    fig = Figure(figsize=(14, 4.8) if gains else (9, 4.5), layout="constrained")
    ax = fig.add_subplot(1, 1 + gains, 1)
    rules = [m for m in methods if m not in DEPTH_BASELINES and m != reference]
    colours = itertools.cycle(matplotlib.colormaps["tab10" if len(rules) <= 10 else "tab20"].colors)

    def curve(method):  # mean and std in %, NaN where the method has no entry
        entries = [last.get((method, d), {"mean": math.nan, "std": 0.0}) for d in depths]
        return 100 * np.array([e["mean"] for e in entries]), 100 * np.array([e["std"] for e in entries])

    styles = {}
    for method in methods:
        learned = method in rules
        mean, std = curve(method)
        styles[method] = dict(marker="o" if learned else "s", capsize=3,
                              linestyle="-" if learned else ":" if method == reference else "--",
                              color=DEPTH_BASELINES.get(method, "firebrick" if method == reference else None)
                              or next(colours))
        label = method + ("" if learned else " (baseline)") + (" (diverged)" if np.isnan(mean).all() else "")
        ax.errorbar(depths, mean, yerr=std, label=label, **styles[method])
    seeds = max(e.get("n", 1) for e in last.values())
    where = f"{data['dataset']}, {data['n_train']:,} / {data['n_test']:,} images: " if data else ""
    title = f"{where}linear probe on the last stage ({seeds} seed{'s' * (seeds > 1)})"
    ax.set(title=title, xlabel="conv stages", ylabel="probe accuracy (%)", xticks=depths)
    if gains:
        zoom = fig.add_subplot(1, 2, 2)
        base, _ = curve(baseline)
        left_out = []
        for method in methods:
            mean, std = curve(method)
            if method == baseline or np.isnan(mean).all():
                continue
            if np.nanmin(mean - base) < -within:
                left_out.append(method)
                continue
            zoom.errorbar(depths, mean - base, yerr=std, **styles[method])
        zoom.axhline(0.0, color=styles[baseline]["color"], linestyle="--", linewidth=1)
        note = f"\nnot shown, more than {within:g} below: " + ", ".join(left_out) if left_out else ""
        zoom.set(title=f"gain over the {baseline} net{note}", xlabel="conv stages",
                 ylabel=f"probe accuracy - {baseline} (points)", xticks=depths)
        zoom.title.set_fontsize("medium")
    fig.legend(*ax.get_legend_handles_labels(), fontsize="small", loc="outside right center")
    return fig


def learning_curves(curves: dict, *, xlabel: str = "samples seen", ylabel: str = "accuracy",
                    title: str | None = None) -> Figure:
    """One line per entry of curves, {label: values} or {label: (x, values)}.

    values (P,) or (runs, P): several runs show as their mean with a band from min to max.
    Without x, points are numbered 1..P.
    """
    if not isinstance(curves, dict) or not curves:
        raise ValueError("curves must be a non-empty dict {label: values or (x, values)}")
    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.add_subplot()
    for label, curve in curves.items():
        x, values = curve if isinstance(curve, tuple) else (None, curve)
        values = np.atleast_2d(_numpy(values).astype(float))  # (runs, P)
        x = np.arange(1, values.shape[1] + 1) if x is None else _numpy(x)
        if len(x) != values.shape[1]:
            raise ValueError(f"curve {label!r}: {len(x)} x values for {values.shape[1]} points")
        line, = ax.plot(x, values.mean(axis=0), marker="." if values.shape[1] < 30 else None, label=str(label))
        if len(values) > 1:
            ax.fill_between(x, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small")
    ax.set_title(title or "learning curves")
    return fig


def _cell_text_colour(rgba) -> str:
    """Black on light cells, white on dark ones (relative luminance of the cell colour)."""
    r, g, b = rgba[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5 else "white"


def heatmap(values, *, rows, columns, xlabel: str, ylabel: str, title: str, fmt: str = "{:.2f}",
            colorbar_label: str | None = None, cmap: str = "viridis", vmin=None, vmax=None, norm=None,
            fontsize: float = 10, ax=None) -> Figure:
    """An annotated heat map: one cell per value (R, C) with its number written in it, a colour
    bar, labelled rows and columns.

    rows / columns: tick labels (R and C of them). fmt: format of the cell text (NaN: blank).
    norm: a matplotlib Normalize (e.g. LogNorm) instead of vmin / vmax. Cell text is ``fontsize``
    points, black on light cells and white on dark ones. ax: draw into this Axes of an existing
    Figure (a panel of a larger figure); otherwise a new Figure. Returns the Figure.
    """
    values = np.asarray(_numpy(values), dtype=float)
    if values.ndim != 2:
        raise ValueError(f"values must be a 2-d grid (R, C), got shape {values.shape}")
    rows, columns = [str(r) for r in rows], [str(c) for c in columns]
    if (len(rows), len(columns)) != values.shape:
        raise ValueError(f"{len(rows)} row and {len(columns)} column labels for a grid of shape {values.shape}")
    if ax is None:
        fig = Figure(figsize=(1.1 * len(columns) + 2.6, 0.6 * len(rows) + 1.6), layout="constrained")
        ax = fig.add_subplot()
    fig = ax.figure
    kwargs = {"norm": norm} if norm is not None else {"vmin": vmin, "vmax": vmax}
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, aspect="auto", interpolation="nearest", **kwargs)
    ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks(range(len(rows)), rows)
    if max(map(len, columns), default=0) > 6:
        ax.tick_params(axis="x", labelrotation=35)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=fontsize,
                    color=_cell_text_colour(im.cmap(im.norm(v))))
    fig.colorbar(im, ax=ax, label=colorbar_label)
    return fig


def _is_colorbar(ax) -> bool:
    return getattr(ax, "_colorbar", None) is not None


def figure_problems(fig) -> list[str]:
    """What a figure lacks to be read on its own: a title (the figure's or each panel's) and a
    label on every axis that shows tick labels; colour bars need a label too. Empty when nothing.

    Panels without ticks (images drawn as pictures, ``set_axis_off``) need no axis labels."""
    problems = []
    suptitle = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) is not None else ""
    titled = [ax for ax in fig.axes if ax.get_visible()
              and any(ax.get_title(loc=loc) for loc in ("left", "center", "right"))]
    if not suptitle and not titled:
        problems.append("no title")
    for n, ax in enumerate(fig.axes):
        if not ax.get_visible() or not ax.axison:
            continue
        name = f"axes {n}" + (f" ({ax.get_title()!r})" if ax.get_title() else "")
        if _is_colorbar(ax):
            axis = ax.yaxis if ax._colorbar.orientation == "vertical" else ax.xaxis
            if not axis.get_label_text():
                problems.append(f"{name}: colour bar without a label")
            continue
        for letter, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            shown = [t for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]
            if shown and axis.get_visible() and not axis.get_label_text():
                problems.append(f"{name}: {letter} axis without a label")
    return problems


def kernel_map(conv, patterns, names=None, *, title: str | None = None) -> Figure:
    """Which kernel of an FpConv2d fires where on each pattern, drawn on the pattern itself.

    patterns: images (P, C, H, W) (or (P, H, W), one channel). Top row: the patterns. Middle row:
    each pattern in light grey with, over every output location, the colour and number of the
    kernel that fires most there (none: no colour), placed on the pixels the kernel's patch is
    centred on, so the map lines up with the pattern. Bottom row: the kernels, large, titled in
    their colours. The layer's state is untouched; ``fig.winners`` keeps the map (P, H_out, W_out),
    -1 where no kernel fires.
    """
    patterns = torch.as_tensor(patterns)
    if patterns.dim() == 3:
        patterns = patterns.unsqueeze(1)
    if patterns.dim() != 4:
        raise ValueError(f"patterns must be images (P, C, H, W) or (P, H, W), got {tuple(patterns.shape)}")
    names = [str(n) for n in (names if names is not None else range(len(patterns)))]
    if len(names) != len(patterns):
        raise ValueError(f"{len(names)} names for {len(patterns)} patterns")
    training = conv.training
    conv.eval()  # respond without learning
    try:
        with torch.no_grad():
            out = conv(patterns.to(conv.weight)).cpu()  # (P, N, Ho, Wo)
    finally:
        conv.train(training)
    winners = torch.where((out > 0).any(1), out.argmax(1), -1)  # (P, Ho, Wo)
    n_kernels = conv.weight.shape[0]
    colours = matplotlib.colormaps["tab10" if n_kernels <= 10 else "tab20"]
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    Ho, Wo = winners.shape[1:]
    H, W = patterns.shape[2:]
    # output cell (i, j) drawn over the input pixels its patch is centred on
    left, top = -pw + (kw - 1) / 2 - sw / 2, -ph + (kh - 1) / 2 - sh / 2
    extent = (left, left + Wo * sw, top + Ho * sh, top)
    P = len(patterns)
    fig = Figure(figsize=(max(1.9 * P, 1.3 * n_kernels), 6.4), layout="constrained")
    upper, lower = fig.subfigures(2, 1, height_ratios=(2, 1))
    axes = upper.subplots(2, P, squeeze=False)
    grey = _numpy(patterns.float().mean(1))  # (P, H, W)
    for p in range(P):
        axes[0, p].imshow(grey[p], cmap="gray_r", interpolation="nearest")
        axes[0, p].set_title(names[p])
        ax = axes[1, p]
        ax.imshow(grey[p], cmap="gray_r", alpha=0.25, interpolation="nearest")
        rgba = np.zeros((Ho, Wo, 4))
        for (i, j), k in np.ndenumerate(winners[p].numpy()):
            if k >= 0:
                rgba[i, j] = (*colours(k % colours.N)[:3], 0.75)
                ax.text(left + (j + 0.5) * sw, top + (i + 0.5) * sh, str(k), ha="center",
                        va="center", fontsize=9)
        ax.imshow(rgba, extent=extent, interpolation="nearest")
        ax.set_xlim(-0.5, W - 0.5)
        ax.set_ylim(H - 0.5, -0.5)
        ax.set_title(f"kernels on {names[p]}", fontsize="small")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    upper.suptitle("the patterns (top) and which kernel fires most at each location (below)")
    tiles = weight_tiles(conv)  # (N, kH, kW[, 3])
    lim = float(tiles.abs().max()) or 1.0
    for k, ax in enumerate(lower.subplots(1, n_kernels, squeeze=False)[0]):
        ax.imshow(_numpy(tiles[k]), cmap=WEIGHT_CMAP, vmin=-lim, vmax=lim, interpolation="nearest")
        ax.set_title(f"kernel {k}", color=colours(k % colours.N), fontweight="bold")
        ax.set_axis_off()
    lower.suptitle("the kernels (blue negative, red positive)")
    fig.suptitle(title or f"{n_kernels} kernels of {kh}x{kw} on {P} patterns")
    fig.winners = winners
    return fig
