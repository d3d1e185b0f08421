"""Compute and memory of learning: a Frontprop stack against the same architecture with backprop.

The claim under test: Frontprop needs less compute and memory than backprop, since it keeps no
activations for a backward pass and has none to run.

The architectures: ``widths = (N1, N2, ...)`` over D inputs. Frontprop: FpLinear(D, N1) ->
FpLinear(N1, N2) -> ..., each layer learning in its forward pass from the output of the one
below. Backprop: Linear(D, N1, no bias) -> ReLU -> Linear(N1, N2) -> ReLU -> ... -> Linear(N_last,
n_classes) head, cross-entropy on labels, forward + backward + optimiser step (Adam by default)
per mini-batch. Both see the same mini-batches of the same random inputs.

Time: wall-clock seconds per sample over ``n_samples``, after a first batch (which allocates the
gradients and optimiser state), with torch *and numba* limited to ``threads`` threads, the median
of ``repeats`` runs (each a fresh model from the same seed, so each does the same work) with their
range, after a warm-up of a throwaway model of the same kind and size and of every compiled
kernel. ``compiles_during_timing`` counts the kernel specialisations compiled (or loaded from
numba's cache) inside the timed runs; the median keeps one such run from setting the number.

Why Frontprop's time used to jump between runs while backprop's did not: one timed run, where
anything slow inside it (a kernel specialisation compiled in a fresh process when numba's cache
is stale, as after any edit of ``fpwb/layers/kernels.py``; a burst of load from other processes)
was the result; and numba's thread pool was started with one worker per core whatever the thread
count asked for (``NUMBA_NUM_THREADS`` is now set to ``threads`` in the measuring process), so a
one-thread measurement ran with pool threads competing against other processes.

Memory, two ways, because neither alone is the whole story:

- ``peak_mb`` (measured): the rise of the process's peak resident set size over the run. Each
  configuration runs in a fresh subprocess (``measure(..., isolate=True)``); after imports, data
  and the warm-up (its model freed), and before the model is built, it resets the kernel's high-water mark
  (writing ``5`` to ``/proc/self/clear_refs``, Linux >= 4.0, see proc(5)) and records the current
  RSS; after the run it reads ``VmHWM`` from ``/proc/self/status``. The difference is every byte
  the model and its learning held at the worst moment: weights, gradients, optimiser state,
  saved activations, temporaries, allocator slack. tracemalloc cannot do this: torch
  allocates its CPU tensors outside Python's allocator. Where /proc is not there (not Linux),
  ``resource.getrusage`` gives the lifetime peak and the number includes the set-up.
- ``state_mb`` and ``saved_mb`` (counted): parameters/buffers + gradients + optimiser state, and
  the bytes of the tensors autograd keeps for the backward pass, counted with
  ``torch.autograd.graph.saved_tensors_hooks`` on one batch (Frontprop: its buffers; nothing saved,
  it runs under no_grad). These explain the measured number; they leave out temporaries.
"""
from __future__ import annotations

import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from ..layers.linear import FpLinear

MODES = ("frontprop", "frontprop-batch", "backprop")


def _check(widths, in_features, batch_size, n_samples):
    if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"widths must be positive ints, got {widths!r}")
    for name, value in (("in_features", in_features), ("batch_size", batch_size), ("n_samples", n_samples)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def frontprop_stack(in_features: int, widths, *, mode: str = "sequential", seed: int = 0, **kwargs):
    """FpLinear layers in sequence, each learning from the one below (an nn.Sequential)."""
    sizes = [in_features, *widths]
    return torch.nn.Sequential(*(FpLinear(a, b, mode=mode, seed=seed + i, **kwargs)
                                 for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))))


def backprop_stack(in_features: int, widths, n_classes: int = 10, seed: int = 0):
    """The same shape trained with backprop: bias-free Linear + ReLU per layer, then a linear head."""
    torch.manual_seed(seed)
    sizes = [in_features, *widths]
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(a, b, bias=False), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers, torch.nn.Linear(sizes[-1], n_classes))


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class _Runner:
    """One configuration: a model, an optimiser where there is one, and a step on a batch."""

    def __init__(self, mode, in_features, widths, n_classes, optimizer, seed):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        if mode == "backprop":
            self.model = backprop_stack(in_features, widths, n_classes, seed)
            params = self.model.parameters()
            self.optimizer = (torch.optim.Adam(params, lr=1e-3) if optimizer == "adam"
                              else torch.optim.SGD(params, lr=0.01))
        else:
            self.model = frontprop_stack(in_features, widths, seed=seed,
                                         mode="batch" if mode == "frontprop-batch" else "sequential",
                                         w_boost=0.01, t_decay=0.003)
            self.optimizer = None

    def step(self, x, y):
        if self.optimizer is None:
            with torch.no_grad():
                self.model(x)
            return
        loss = torch.nn.functional.cross_entropy(self.model(x), y)
        self.optimizer.zero_grad(set_to_none=False)
        loss.backward()
        self.optimizer.step()

    def counted(self, x, y) -> dict:
        """Bytes of state (params/buffers, grads, optimiser state) and of tensors saved for backward."""
        saved = []

        def pack(t):
            saved.append(t)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            self.step(x, y)
        # the same storage may be saved twice (e.g. a ReLU output feeding the next matmul)
        unique = {(t.untyped_storage().data_ptr(), t.numel(), t.dtype): t for t in saved}
        params = _tensor_bytes(self.model.parameters()) + _tensor_bytes(self.model.buffers())
        grads = _tensor_bytes(p.grad for p in self.model.parameters() if p.grad is not None)
        opt = 0
        if self.optimizer is not None:
            opt = _tensor_bytes(v for s in self.optimizer.state.values() for v in s.values()
                                if isinstance(v, torch.Tensor))
        return {"params_bytes": params, "grads_bytes": grads, "optimizer_bytes": opt,
                "saved_bytes": _tensor_bytes(unique.values())}


def rss_kb(field: str) -> int | None:
    """A field of /proc/self/status in kB (``VmRSS``: resident now; ``VmHWM``: its peak), None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (``VmHWM``) to the current RSS; False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _warm_kernels(dtype):
    """Run every compiled kernel of the plain rule once (compiled, or loaded from numba's cache),
    so that a measured run's first firing does not pay for it: a throwaway model still in its
    silent start would not reach them."""
    x = torch.rand(64, 8, dtype=dtype)
    for mode, solver in (("sequential", "gram"), ("sequential", "direct"), ("batch", None)):
        layer = FpLinear(8, 4, t_decay=0.5, mode=mode, dtype=dtype, seed=0)
        layer.solver = solver
        layer(x)


def measure(mode: str, widths, *, in_features: int = 784, n_classes: int = 10, batch_size: int = 64,
            n_samples: int = 1024, optimizer: str = "adam", threads: int = 1, seed: int = 0,
            repeats: int = 3, isolate: bool = True, timeout: float = 600) -> dict:
    """Time per sample and memory of one configuration learning n_samples random inputs.

    isolate: run in a fresh Python subprocess (the memory numbers need it: a process's peak RSS
    only grows). Returns {mode, widths, in_features, batch_size, n_samples, optimizer, threads,
    us_per_sample (median of the repeats), us_runs (each repeat), us_min, us_max,
    compiles_during_timing, load_average (1-minute, at the end), fired_per_sample (Frontprop
    firings per sample, all layers; None for backprop),
    peak_mb, peak_method, params_bytes, grads_bytes, optimizer_bytes,
    saved_bytes, state_mb, saved_mb}.
    """
    widths = tuple(int(w) for w in widths) if isinstance(widths, (list, tuple)) else widths
    _check(widths, in_features, batch_size, n_samples)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    config = dict(mode=mode, widths=list(widths), in_features=in_features, n_classes=n_classes,
                  batch_size=batch_size, n_samples=n_samples, optimizer=optimizer, threads=threads,
                  seed=seed, repeats=repeats)
    if isolate:
        done = subprocess.run([sys.executable, "-c", "import json, sys; from fpwb.studies import efficiency; "
                               "print(json.dumps(efficiency._measure_here(**json.loads(sys.argv[1]))))",
                               json.dumps(config)], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "OMP_NUM_THREADS": str(threads),
                                   "NUMBA_NUM_THREADS": str(threads)})
        if done.returncode != 0:
            raise RuntimeError(f"measuring {config} failed:\n{done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])
    return _measure_here(**config)


def _specialisations() -> int:
    """How many compiled specialisations the kernels hold (compiled here or loaded from cache)."""
    import numba

    from ..layers import kernels

    return sum(len(k.signatures) for k in vars(kernels).values()
               if isinstance(k, numba.core.registry.CPUDispatcher))


def _run(mode, in_features, widths, n_classes, optimizer, seed, X, y, batch_size, n_samples):
    """One run: a fresh model, its first step, then the timed steps; (runner, seconds)."""
    runner = _Runner(mode, in_features, widths, n_classes, optimizer, seed)
    runner.step(X[-batch_size:], y[-batch_size:])  # first step: buffers, grads, optimiser state
    start = time.perf_counter()
    for s in range(0, n_samples, batch_size):
        runner.step(X[s:s + batch_size], y[s:s + batch_size])
    return runner, time.perf_counter() - start


def _measure_here(mode, widths, in_features, n_classes, batch_size, n_samples, optimizer, threads,
                  seed, repeats=1) -> dict:
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(seed)
    X = torch.rand(n_samples + batch_size, in_features, generator=generator)
    y = torch.randint(0, n_classes, (len(X),), generator=generator)
    args = (mode, in_features, widths, n_classes, optimizer, seed, X, y, batch_size, n_samples)
    # warm-up on a throwaway model of the same kind and size, two batches: compiled kernels
    # loaded (the solver picked depends on the size), autograd and the optimiser initialised; so
    # the peak below holds the model's own cost, not one-off set-up
    warm = _Runner(mode, in_features, widths, n_classes, optimizer, seed)
    for _ in range(2):
        warm.step(X[-batch_size:], y[-batch_size:])
    del warm
    if mode != "backprop":
        _warm_kernels(X.dtype)
    gc.collect()
    compiled = _specialisations() if mode != "backprop" else 0
    reset = reset_peak()
    base_kb = rss_kb("VmRSS") if reset else None
    runs = []
    for _ in range(repeats):
        runner = None  # the previous run's model is freed before the next is built
        runner, seconds = _run(*args)
        runs.append(seconds / n_samples * 1e6)
    compiled = (_specialisations() - compiled) if mode != "backprop" else 0
    if reset and base_kb is not None:
        peak_mb, method = (rss_kb("VmHWM") - base_kb) / 1024, "VmHWM rise from before the model"
    else:
        usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_mb = usage / 1024 / (1024 if sys.platform == "darwin" else 1)
        method = "ru_maxrss (lifetime, includes set-up)"
    # How much learning the timed samples did: firings per sample, summed over the layers
    # (a Frontprop layer's cost grows with it); None for backprop, which always does all of it.
    fired = None
    if mode != "backprop":
        fired = sum(int(m.fire_count.sum()) for m in runner.model) / (n_samples + batch_size)
    counted = runner.counted(X[-batch_size:], y[-batch_size:])
    state = counted["params_bytes"] + counted["grads_bytes"] + counted["optimizer_bytes"]
    return {"mode": mode, "widths": list(widths), "in_features": in_features, "batch_size": batch_size,
            "n_samples": n_samples, "optimizer": optimizer if mode == "backprop" else None,
            "threads": threads, "us_per_sample": statistics.median(runs), "us_runs": runs,
            "us_min": min(runs), "us_max": max(runs), "compiles_during_timing": compiled,
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "fired_per_sample": fired, "peak_mb": peak_mb,
            "peak_method": method, **counted, "state_mb": state / 2 ** 20,
            "saved_mb": counted["saved_bytes"] / 2 ** 20}


def compare(sizes=(256, 1024, 4096), depth: int = 2, modes=MODES, progress=None, **kwargs) -> list[dict]:
    """``measure`` every mode at every width (``depth`` layers of that width), one subprocess each."""
    rows = []
    for size in sizes:
        for mode in modes:
            row = measure(mode, (size,) * depth, **kwargs)
            rows.append(row)
            if progress is not None:
                progress(row)
    return rows


def table(rows) -> str:
    """One line per row of :func:`compare`: time, firings per sample (Frontprop), peak and
    counted memory."""
    lines = [f"{'width':>6} {'mode':<16} {'us/sample':>10} {'range':>13} {'fired/sample':>13} {'peak MB':>9} "
             f"{'state MB':>9} {'saved MB':>9}"]
    for r in rows:
        fired = "-" if r.get("fired_per_sample") is None else f"{r['fired_per_sample']:.1f}"
        spread = f"{r.get('us_min', r['us_per_sample']):.0f}-{r.get('us_max', r['us_per_sample']):.0f}"
        lines.append(f"{r['widths'][0]:>6} {r['mode']:<16} {r['us_per_sample']:>10.0f} {spread:>13} {fired:>13} "
                     f"{r['peak_mb']:>9.1f} {r['state_mb']:>9.1f} {r['saved_mb']:>9.2f}")
    return "\n".join(lines)


def plot(rows, title: str = "learning cost: Frontprop against backprop"):
    """Two panels against width: microseconds per sample (median of the repeats, bars: their
    range), and peak memory (MB, measured; dashed: counted state + saved tensors). Returns the
    Figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.2), layout="constrained")
    ax_t, ax_m = fig.subplots(1, 2)
    colors = {"frontprop": "tab:blue", "frontprop-batch": "tab:cyan", "backprop": "tab:red"}
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["widths"][0])
        x = [r["widths"][0] for r in mine]
        color = colors.get(mode)
        median = [r["us_per_sample"] for r in mine]
        spread = [[m - r.get("us_min", m) for m, r in zip(median, mine)],
                  [r.get("us_max", m) - m for m, r in zip(median, mine)]]
        ax_t.errorbar(x, median, yerr=spread, fmt="o-", capsize=3, color=color, label=mode)
        ax_m.plot(x, [r["peak_mb"] for r in mine], "o-", color=color, label=f"{mode} (peak RSS)")
        ax_m.plot(x, [r["state_mb"] + r["saved_mb"] for r in mine], "x--", color=color,
                  label=f"{mode} (state + saved)")
    for ax, label in ((ax_t, "µs per sample"), (ax_m, "MB")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(f"width ({len(rows[0]['widths'])} layers over {rows[0]['in_features']} inputs)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    ax_t.set_title(f"time per sample (median of {len(rows[0].get('us_runs', [0]))}, range)")
    ax_m.set_title("memory while learning")
    ax_t.legend(fontsize="small")
    ax_m.legend(fontsize="x-small")
    fig.suptitle(title)
    return fig
