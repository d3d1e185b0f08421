"""Continued training of a pretrained LM on new text, three ways at matched tokens, and how it is
measured: perplexity on held-out text, cost per token, peak memory, samples.

Arms (``ARMS``):

- ``"frontprop"``: the chosen layers are ``FpDropIn`` (``fpwb.lm.dropin.convert``) and learn by
  the Frontprop rule in the forward pass; nothing else changes, no gradients anywhere, no targets
  seen (the rule is unsupervised).
- ``"backprop"``: the same layers, still Linear, fine-tuned on the next-token loss with Adam;
  every other parameter frozen.
- ``"frozen"``: nothing learns (the reference for forgetting and adaptation).
"""
from __future__ import annotations

import ctypes
import gc
import time

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..evaluation.diagnostics import fired_share, learned_neurons
from ..studies.efficiency import reset_peak, rss_kb
from .dropin import FpDropIn

ARMS = ("frontprop", "backprop", "frozen")


def _loss(model, batch):
    logits = model(batch[:, :-1])  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1))


def perplexity(model: nn.Module, ids: torch.Tensor, context: int, *, batch_size: int = 32,
               max_tokens: int | None = None, device="cpu") -> float:
    """exp(mean next-token cross-entropy) over ids (T,) (the first ``max_tokens``), in consecutive
    windows of ``context`` predicted tokens, each predicted once. Runs in eval mode (nothing
    learns); the model's mode is restored."""
    ids = ids[:max_tokens] if max_tokens else ids
    n = (len(ids) - 1) // context
    if n < 1:
        raise ValueError(f"need more than {context} tokens, got {len(ids)}")
    windows = ids[:n * context + 1].unfold(0, context + 1, context)  # (n, context + 1)
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                batch = windows[start:start + batch_size].to(device)
                total += float(_loss(model, batch)) * len(batch)
    finally:
        model.train(was_training)
    return float(torch.tensor(total / n).exp())


def trainable_only(model: nn.Module, names) -> list:
    """Freeze every parameter of ``model`` except those of the named modules; returns those."""
    keep = {id(p) for name in names for p in model.get_submodule(name).parameters()}
    params = []
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
        if id(p) in keep:
            params.append(p)
    return params


def _trim_heap():
    """Hand the C heap's free pages back to the OS (glibc ``malloc_trim``), so that the resident
    set is the memory in use and a peak measured from it counts new allocations, not reuse of
    freed ones. Does nothing without glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak(device) -> int | None:
    """Start a peak-memory measurement; returns the baseline (bytes), None where there is none."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    _trim_heap()
    if not reset_peak():
        return None
    kb = rss_kb("VmRSS")
    return None if kb is None else kb * 1024


def _peak_rise(device, base) -> float | None:
    """MB the peak rose above ``base`` since ``_reset_peak``."""
    if base is None:
        return None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20
    kb = rss_kb("VmHWM")
    return None if kb is None else (kb * 1024 - base) / 2 ** 20


def _saved_bytes(model, batch) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of one batch's loss."""
    saved = {}

    def pack(t):
        saved[(t.untyped_storage().data_ptr(), t.numel(), t.dtype)] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = _loss(model, batch)
    del loss
    return sum(saved.values())


def adapt(model: nn.Module, arm: str, names, batches, *, lr: float = 1e-3, device="cpu",
          progress: bool = True) -> dict:
    """Continue training ``model`` on ``batches`` ((B, T + 1) token windows) by ``arm``.

    names: the chosen layers (for "frontprop" already ``FpDropIn``, see ``dropin.convert``; for
    "backprop" the Linear layers to fine-tune, every other parameter is frozen). Runs the whole
    model in eval mode (no dropout) with only the chosen layers learning.

    Returns {arm, tokens, seconds, us_per_token (wall time per token after the first batch, which
    pays for one-off set-up), peak_mb (rise of the peak memory over the run: RSS high-water mark
    on CPU, allocated bytes on CUDA; None where it cannot be read), learning_state_mb (gradients
    + optimiser state; Frontprop: thresholds and firing counts), saved_mb (tensors kept for the
    backward pass, one batch), losses (backprop's training loss per batch), and for "frontprop":
    learned_share (share of Fp neurons whose weights moved, all chosen layers), fired_share, and
    per layer {name: learned share}}.
    """
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
    device = torch.device(device)
    names = list(names)
    model.eval()
    result = {"arm": arm, "tokens": 0, "losses": []}
    if arm == "frozen":
        for batch in batches:
            result["tokens"] += batch[:, 1:].numel()
        return {**result, "seconds": 0.0, "us_per_token": 0.0, "peak_mb": 0.0,
                "learning_state_mb": 0.0, "saved_mb": 0.0}
    layers = [model.get_submodule(n) for n in names]
    if arm == "frontprop":
        wrong = [n for n, m in zip(names, layers) if not isinstance(m, FpDropIn)]
        if wrong:
            raise ValueError(f"the frontprop arm needs FpDropIn layers (dropin.convert); not: {wrong}")
        for p in model.parameters():
            p.requires_grad_(False)
        initial = [m.fp.weight.clone() for m in layers]
        for m in layers:
            m.train()
        optimizer = None
    else:
        params = trainable_only(model, names)
        optimizer = torch.optim.Adam(params, lr=lr)
    base = _reset_peak(device)
    times = []
    for batch in tqdm(batches, desc=arm, disable=not progress, leave=False):
        batch = batch.to(device)
        start = time.perf_counter()
        if optimizer is None:
            with torch.no_grad():
                model(batch[:, :-1])
        else:
            loss = _loss(model, batch)
            optimizer.zero_grad(set_to_none=False)
            loss.backward()
            optimizer.step()
            result["losses"].append(float(loss.detach()))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
        result["tokens"] += batch[:, 1:].numel()
    peak = _peak_rise(device, base)
    model.eval()
    per_batch = result["tokens"] / max(1, len(times))
    timed = times[1:] or times
    result.update(seconds=sum(times), us_per_token=sum(timed) / (len(timed) * per_batch) * 1e6,
                  peak_mb=peak)
    if optimizer is None:
        state = sum(m.fp.threshold.numel() * m.fp.threshold.element_size()
                    + m.fp.fire_count.numel() * m.fp.fire_count.element_size() for m in layers)
        moved = [learned_neurons(m.fp, w0) for m, w0 in zip(layers, initial)]
        result.update(learning_state_mb=state / 2 ** 20, saved_mb=0.0,
                      learned_share=float(torch.cat(moved).float().mean()),
                      fired_share=sum(fired_share(m.fp) * m.out_features for m in layers)
                      / sum(m.out_features for m in layers),
                      per_layer={n: float(mv.float().mean()) for n, mv in zip(names, moved)})
        for m in layers:
            m.eval()
    else:
        state = sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
        state += sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
                     if isinstance(v, torch.Tensor))
        result.update(learning_state_mb=state / 2 ** 20,
                      saved_mb=_saved_bytes(model, batch) / 2 ** 20)
        for p in model.parameters():
            p.requires_grad_(False)
    return result


def generate(lm, prompt: str, n_tokens: int = 120, *, temperature: float = 0.8, seed: int = 0,
             device="cpu") -> str:
    """``n_tokens`` sampled after ``prompt`` (temperature sampling, seeded; eval mode, nothing
    learns), returned as text without the prompt."""
    ids = lm.encode(prompt).to(device)
    prompt_len = len(ids)
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = lm.model.training
    lm.model.eval()
    try:
        with torch.no_grad():
            for _ in range(n_tokens):
                logits = lm.model(ids[-lm.context:].unsqueeze(0))[0, -1].float()  # (V,)
                probs = torch.softmax(logits / temperature, dim=-1)
                ids = torch.cat([ids, torch.multinomial(probs, 1, generator=generator)])
    finally:
        lm.model.train(was_training)
    return lm.decode(ids[prompt_len:].cpu())


def active_share(model: nn.Module, names, ids: torch.Tensor) -> float:
    """Share of (token, neuron) outputs of the named ``FpDropIn`` layers that fire (are non-zero)
    when ``model`` runs on token ids (B, T) in eval mode (nothing learns; the mode is restored)."""
    counts, hooks = [0, 0], []
    was_training = model.training
    model.eval()
    try:
        for name in names:
            layer = model.get_submodule(name)
            if not isinstance(layer, FpDropIn):
                raise ValueError(f"{name} is not an FpDropIn")

            def hook(_module, _args, out):
                counts[0] += int((out != 0).sum())
                counts[1] += out.numel()
            hooks.append(layer.fp.register_forward_hook(hook))
        with torch.no_grad():
            model(ids)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return counts[0] / max(1, counts[1])
