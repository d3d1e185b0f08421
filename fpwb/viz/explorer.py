"""Explorer: a JupyterLab panel to watch an FpLinear learn while you move its sliders.

The figure is a plain matplotlib Figure rendered to PNG into an ``ipywidgets.Image``: no extra
front-end package is needed, and swapping the image's bytes does not flicker. The figure, its
axes and its artists are made once; each update sets their data in place.

Displayed, the panel also carries a PNG snapshot of its figure next to the live widget: front ends
that render widgets show the panel, the others (an untrusted notebook) show the snapshot. Run
headless (:func:`headless`: papermill, nbval, the report) the display is the snapshot alone, so
the notebook's HTML page shows the figure, and the notebook closes the panel; in JupyterLab the
panel stays live. ``display(explorer.widget)`` shows the live panel whatever headless says.
"""
from __future__ import annotations

import base64
import html
import io
import math
import os
import threading
import time

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure

from . import plots
from ..data import PATTERN_NAMES, SIMPLE_PATTERNS
from ..layers.linear import FpLinear
from .recorder import Recorder


#: Set by fpwb's runners in their kernels' environment (``fpwb.runs.experiments.RUNNER_ENV``;
#: fpwb.viz does not import fpwb.runs).
RUNNER_ENV = "FPWB_RUNNER"


def headless() -> bool:
    """True when nobody can use a widget made here, so a notebook may close its panels.

    Headless: a kernel of fpwb's runners (``fpwb report``, ``fpwb sweep``: they set
    ``FPWB_RUNNER``), no IPython kernel at all (a script, pytest), or a kernel that papermill,
    nbval, nbclient or ``nbconvert --execute`` drive (the notebook tests): they start kernels
    themselves and send bare execute requests. Interactive: a kernel that a Jupyter server started
    for a notebook (JupyterLab, Notebook 7: the server sets ``JPY_SESSION_NAME`` in the kernel's
    environment), or a cell run by a front end that edits notebooks (JupyterLab sends the cell's
    id, ``cellId``, with the execute request).
    """
    from IPython import get_ipython

    if os.environ.get(RUNNER_ENV):
        return True
    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return True
    if os.environ.get("JPY_SESSION_NAME"):
        return False
    request = kernel.get_parent() or {}
    return "cellId" not in (request.get("metadata") or {})


def _pool(data):
    """(images (M, C, H, W), labels (M,), class names) for the explorer's stream."""
    if isinstance(data, str) and data == "patterns":
        return SIMPLE_PATTERNS.unsqueeze(1), torch.arange(len(SIMPLE_PATTERNS)), list(PATTERN_NAMES)
    if isinstance(data, str):
        from .. import data as datasets
        images, labels = datasets.load(data, split="train")
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = data
    else:
        raise ValueError(f"data must be 'patterns', a data set name for fpwb.data.load, or "
                         f"(images, labels); got {data!r}")
    images, labels = torch.as_tensor(images, dtype=torch.float32), torch.as_tensor(labels).long()
    if images.dim() != 4 or len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"expected images (M, C, H, W) and labels (M,), got "
                         f"{tuple(images.shape)} and {tuple(labels.shape)}")
    return images, labels, [str(c) for c in range(int(labels.max()) + 1)]


class Explorer:
    """Sliders, buttons and a live figure around one FpLinear learning from a stream of images.

    The stream draws a class with the probabilities of the ``prob_sliders`` (relative weights),
    then one image of that class from ``data``, plus Gaussian noise (``noise_slider``). data:
    ``"patterns"`` (the six simple 7x7 patterns), a name for ``fpwb.data.load`` (e.g.
    ``"digits"``, ``"fashion_mnist"``; its train split), or (images (M, C, H, W), labels (M,)).

    ``device``: where the layer and the image pool live (a GPU for large data sets); the stream's
    random draws stay on the CPU, so a seed gives the same stream on every device.

    Buttons: run (steps in a background thread until pause), pause, step (one batch of
    ``batch_size`` samples), reset (a fresh layer from the same seed; the stream restarts).
    ``status`` says what the layer has seen, the live hyper-parameters and whether it runs.
    Changing ``w_boost_slider`` / ``t_decay_slider`` sets them on the live layer; the neurons
    slider builds a new layer and its artists (a run goes on with them); noise and probabilities
    change only the stream. Errors of a button (every probability at 0) show in ``status``.

    The figure: weights as images (``weight_image``, with a colour bar for one-channel data) and
    the threshold of every neuron over the samples seen (``threshold_lines``, recorded every
    ``record_every`` samples; a dot marks each neuron's current threshold, so the start, all at
    1.0, shows too). Display the Explorer (last value of a cell) to see the panel and, where
    widgets do not render, a snapshot of its figure.
    """

    def __init__(self, data="patterns", *, n_neurons: int = 12, w_boost: float = 0.05,
                 t_decay: float = 0.005, noise: float = 0.05, probs=None, batch_size: int = 50,
                 record_every: int | None = None, seed: int = 0, interval: float = 0.05,
                 device="cpu"):
        self.data_name = data if isinstance(data, str) else "custom"
        self.device = torch.device(device)
        images, labels, self.class_names = _pool(data)
        order = labels.argsort(stable=True)
        self._images, labels = images[order].to(self.device), labels[order]  # sorted by class
        counts = torch.bincount(labels, minlength=len(self.class_names))  # (K,)
        self._class_count, self._class_start = counts, counts.cumsum(0) - counts
        self.image_shape = tuple(images.shape[1:])  # (C, H, W)
        probs = [1.0] * len(counts) if probs is None else [float(p) for p in probs]
        if len(probs) != len(counts):
            raise ValueError(f"probs needs {len(counts)} values (one per class), got {len(probs)}")
        for name, value in (("batch_size", batch_size), ("n_neurons", n_neurons)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.batch_size, self.seed, self.interval = batch_size, seed, interval
        self.record_every = record_every or batch_size

        # Fixed-width sliders with their readouts in view; the figure shrinks to the space left
        # and moves below the sliders in a narrow window (no horizontal scrollbar).
        style = dict(continuous_update=False, style={"description_width": "70px"},
                     layout=widgets.Layout(width="340px"))
        self.w_boost_slider = widgets.FloatLogSlider(value=w_boost, base=10, min=-4, max=0, step=0.05,
                                                     description="w_boost", readout_format=".2g", **style)
        self.t_decay_slider = widgets.FloatLogSlider(value=t_decay, base=10, min=-5, max=-1, step=0.05,
                                                     description="t_decay", readout_format=".2g", **style)
        self.neurons_slider = widgets.IntSlider(value=n_neurons, min=1, max=max(100, n_neurons),
                                                description="neurons", **style)
        self.noise_slider = widgets.FloatSlider(value=noise, min=0.0, max=1.0, step=0.01,
                                                description="noise", **style)
        self.prob_sliders = [widgets.FloatSlider(value=p, min=0.0, max=max(1.0, p), step=0.05,
                                                 description=f"p({name})", **style)
                             for name, p in zip(self.class_names, probs)]
        self.run_button = widgets.Button(description="run", icon="play")
        self.pause_button = widgets.Button(description="pause", icon="pause")
        self.step_button = widgets.Button(description="step", icon="step-forward")
        self.reset_button = widgets.Button(description="reset", icon="refresh")
        self.status = widgets.HTML()
        self.image = widgets.Image(format="png", layout=widgets.Layout(
            width="auto", height="auto", max_width="720px", min_width="360px", flex="1 1 480px"))

        self.w_boost_slider.observe(self._set_w_boost, names="value")
        self.t_decay_slider.observe(self._set_t_decay, names="value")
        self.neurons_slider.observe(self._set_neurons, names="value")
        for button, action in ((self.run_button, self.run), (self.pause_button, self.pause),
                               (self.step_button, self.step), (self.reset_button, self.reset)):
            button.on_click(lambda _, action=action: self._report(action))

        self.figure = Figure(figsize=(9, 3.6), dpi=80)  # fixed layout: no layout engine at each frame
        self._weight_ax = self.figure.add_axes((0.01, 0.05, 0.37, 0.85))
        self._colorbar_ax = self.figure.add_axes((0.39, 0.14, 0.015, 0.76))
        self._threshold_ax = self.figure.add_axes((0.56, 0.14, 0.42, 0.76))
        self._weight_ax.set_axis_off()
        self._threshold_ax.set_title("threshold of each neuron")
        self._threshold_ax.set_xlabel("samples seen")
        self._threshold_ax.set_ylabel("threshold")
        self.weight_image, self.threshold_lines = None, []
        self._colorbar_ax.set_visible(False)  # shown for one-channel weights
        self._lock = threading.RLock()  # the layer and the figure: run thread vs widget callbacks
        self._running = threading.Event()
        self._thread = None
        self.layer, self.recorder = None, None
        self.reset()

        controls = widgets.VBox([self.w_boost_slider, self.t_decay_slider, self.neurons_slider,
                                 self.noise_slider, *self.prob_sliders],
                                layout=widgets.Layout(flex="0 0 auto"))
        buttons = widgets.HBox([self.run_button, self.pause_button, self.step_button, self.reset_button],
                               layout=widgets.Layout(flex_flow="row wrap"))
        top = widgets.HBox([controls, self.image],
                           layout=widgets.Layout(flex_flow="row wrap", align_items="flex-start"))
        self.widget = widgets.VBox([top, buttons, self.status])

    # Stream ---------------------------------------------------------------------------------
    def draw(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n images (n, C, H, W) on the device and labels (n,) from the stream as the sliders set it now."""
        probs = torch.tensor([s.value for s in self.prob_sliders], dtype=torch.float32)
        if float(probs.sum()) <= 0:
            raise ValueError("every class probability is 0: raise at least one p(...) slider")
        labels = torch.multinomial(probs, n, replacement=True, generator=self._generator)  # (n,)
        pick = (torch.rand(n, generator=self._generator) * self._class_count[labels]).long()
        images = self._images[(self._class_start[labels] + pick).to(self.device)]  # (n, C, H, W)
        if self.noise_slider.value > 0:
            noise = torch.randn(images.shape, generator=self._generator).to(self.device)
            images = images + self.noise_slider.value * noise
        return images, labels

    # Actions --------------------------------------------------------------------------------
    def step(self):
        """Learn from one batch of the stream, then update the figure."""
        with self._lock:
            images, _ = self.draw(self.batch_size)
            self.recorder.feed(images, batch_size=self.batch_size)
            self._refresh()

    def run(self):
        """Step in a background thread until :meth:`pause` (no-op when already running)."""
        if self.running:
            return
        self._running.set()
        with self._lock:
            self._show_status()
        self._thread = threading.Thread(target=self._loop, name="fpwb-explorer", daemon=True)
        self._thread.start()

    def _loop(self):
        while self._running.is_set():
            try:
                self.step()
            except Exception as err:  # a background thread has no caller: report in the panel
                self._running.clear()
                self.status.value = f"<b>stopped</b>: {html.escape(f'{type(err).__name__}: {err}')}"
                return
            time.sleep(self.interval)

    def pause(self):
        """Stop the run after the current step (waits for it); the status then says paused."""
        was_running = self.running  # not after a run stopped by an error: its message stays
        self._running.clear()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None
        if was_running and self.layer is not None:
            with self._lock:
                self._show_status()

    @property
    def running(self) -> bool:
        return self._running.is_set()

    def reset(self):
        """Pause, then a fresh layer (neurons from the slider, same seed) and stream; redraw."""
        self.pause()
        with self._lock:
            if self.recorder is not None:
                self.recorder.close()
            self._generator = torch.Generator().manual_seed(self.seed)
            n = self.neurons_slider.value
            self.layer = FpLinear(math.prod(self.image_shape), n,
                                  w_boost=self.w_boost_slider.value, t_decay=self.t_decay_slider.value,
                                  seed=self.seed, device=self.device)
            self.recorder = Recorder(self.layer, every=self.record_every, snapshot_every=None)
            self._make_artists()
            self._refresh()

    def close(self):
        """Stop running and close the widgets."""
        self.pause()
        self.recorder.close()
        self.widget.close()

    # Widget callbacks -----------------------------------------------------------------------
    def _report(self, action):
        """Run a button's action; a ValueError (e.g. every probability at 0) shows in the panel."""
        try:
            action()
        except ValueError as err:
            self.status.value = f"<b>{html.escape(str(err))}</b>"

    def _set_neurons(self, change):
        running = self.running
        self.reset()
        if running:
            self.run()

    def _set_w_boost(self, change):
        with self._lock:
            self.layer.w_boost = change["new"]
            self._show_status()

    def _set_t_decay(self, change):
        with self._lock:
            self.layer.t_decay = change["new"]
            self._show_status()

    # Figure ---------------------------------------------------------------------------------
    def _mosaic(self):
        tiles = plots.weight_tiles(self.layer, self.image_shape)
        return plots.weight_mosaic(tiles)

    def _make_artists(self):
        """Artists for the current number of neurons: the weight image (and its colour bar) and one
        line per neuron, with a dot at its last point."""
        if self.weight_image is not None:
            self.weight_image.remove()
        for line in self.threshold_lines:
            line.remove()
        mosaic, lim = self._mosaic()
        if mosaic.ndim == 3:
            self.weight_image = self._weight_ax.imshow(mosaic, interpolation="nearest")
        else:
            self.weight_image = self._weight_ax.imshow(mosaic, cmap=plots.WEIGHT_CMAP, vmin=-lim,
                                                       vmax=lim, interpolation="nearest")
            self._colorbar_ax.set_visible(True)
            self._colorbar_ax.clear()  # the previous colour bar's artists; the axes keep their place
            self.figure.colorbar(self.weight_image, cax=self._colorbar_ax, label="weight")
        n = self.layer.out_features
        self.threshold_lines = self._threshold_ax.plot([[0.0] * n], [[1.0] * n], linewidth=1,
                                                       marker="o", markersize=3, markevery=[-1])
        self._weight_ax.set_title(f"weights of {n} neurons")

    def _refresh(self):
        """Set the artists' data from the layer and the recorder, then render the figure."""
        mosaic, lim = self._mosaic()
        self.weight_image.set_data(mosaic)
        if mosaic.ndim == 2:
            self.weight_image.set_clim(-lim, lim)
        samples, thresholds = self.recorder.samples.numpy(), self.recorder.thresholds.numpy()
        for j, line in enumerate(self.threshold_lines):
            line.set_data(samples, thresholds[:, j])
        self._set_threshold_limits(samples, thresholds)
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png")
        self.image.value = buffer.getvalue()
        self._show_status()

    def _set_threshold_limits(self, samples, thresholds):
        """x from 0 to the samples seen (at least one batch), y over the thresholds and at least
        [0, 1]: the start (every threshold at 1.0) shows as a column of dots, not a ±0.04 zoom."""
        span = max(float(samples[-1]), float(self.batch_size))
        self._threshold_ax.set_xlim(-0.02 * span, 1.02 * span)
        low, high = min(0.0, float(thresholds.min())), max(1.0, float(thresholds.max()))
        margin = 0.05 * (high - low)
        self._threshold_ax.set_ylim(low - margin, high + margin)

    def _show_status(self):
        layer = self.layer
        fired = int((layer.fire_count > 0).sum())
        self.status.value = (f"samples seen {int(layer.samples_seen)} · neurons that ever fired "
                             f"{fired}/{layer.out_features} · w_boost {layer.w_boost:.3g} · "
                             f"t_decay {layer.t_decay:.3g} · " + ("running" if self.running else "paused"))

    def _repr_mimebundle_(self, **kwargs):
        """The live panel, a PNG snapshot of its figure and the repr. Headless, the snapshot
        only: an HTML page would otherwise pick the widget, which it cannot draw offline."""
        bundle = {} if headless() else self.widget._repr_mimebundle_(**kwargs) or {}
        return {**bundle, "image/png": base64.b64encode(self.image.value).decode("ascii"),
                "text/plain": repr(self)}

    def __repr__(self) -> str:
        return (f"Explorer(data={self.data_name!r}, device={str(self.device)!r}, "
                f"neurons={self.layer.out_features}, w_boost={self.layer.w_boost:g}, t_decay={self.layer.t_decay:g}, "
                f"noise={self.noise_slider.value:g}, samples_seen={int(self.layer.samples_seen)}, "
                f"running={self.running})")
