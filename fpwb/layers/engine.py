"""The Frontprop rule over a chunk of inputs: exact sequential solver and parallel batch update.

Both layers reduce their input to the same picture: a chunk of E steps (samples), each holding S
slots (FpLinear: one; FpConv2d: one per output location), each slot a unit vector of K values.
Every neuron has one threshold per slot. The stream order is step by step, slots in order inside a
step; every threshold decays once at the end of each step.

The sequential solvers rely on one fact of the rule: neurons never interact. A neuron's path
through the chunk depends only on its own weights, its own thresholds and the inputs. One matmul
gives every projection of the chunk; then, on CPU, a compiled scan walks each neuron that fires
somewhere through the chunk on its own (``kernels.scan_gram`` / ``scan_direct``). On other
devices the walk runs as *firing rounds*: in round k every neuron that still fires somewhere
finds its next firing position at once (one compare over the chunk), takes its update there, and
recomputes its projections for the rest of the chunk (one matmul for all those neurons). The
number of rounds is the largest number of times any single neuron fires in the chunk, not the
number of samples.

Batch mode (``batch_chunk``) holds the weights at the chunk start and lets the thresholds run as
in sequential mode, so its firings need no recomputed projections at all.

Thresholds are compared in a scaled domain so that pure decay needs no work: a threshold t set
before step e0 has decayed to t * r**(e - e0) at step e (r = 1 - t_decay), so
``y >= t * r**(e - e0)``  <=>  ``y * r**-e >= t * r**-e0``. Each neuron keeps one scaled *level*
per slot, and a firing at step e sets it to ``y * r**-e``.

Switches beyond the plain rule (all off by default; see ``fpwb.layers.base.FpLayer``):

- ``rule="oja"``: a fired neuron moves by ``w_boost * y * (x - y * w)`` and is *not*
  renormalised (Oja's rule keeps the norm near 1 by itself). Neurons stay independent, so the
  per-neuron solvers above run it unchanged.
- ``k_winners``: at each position only the k most excited of the fired neurons learn (weights
  and threshold); ``k_output`` also zeroes the losers' output.
- ``repulsion``: a learning neuron j also moves by ``repulsion * (w_j - w_m) / |w_j - w_m|`` (a
  step of length ``repulsion`` straight away from m) for every other neuron m whose weights have
  cosine > ``repulsion_cosine`` with its own (at the start of the position).

With k-WTA or repulsion neurons interact, so the sequential solver walks the chunk position by
position instead (``kernels.scan_positions``): at each position the fired neurons are read from
maintained projections, the winners' new weights are all computed from the weights at the
start of the position, then written. That is the order of the per-sample rule.
"""
from __future__ import annotations

import math

import torch

from . import kernels

# Scaled thresholds grow like r**-E over a chunk; keep that factor well inside float32 range.
MAX_SCALE = 1e6


def max_steps(t_decay: float, requested: int) -> int:
    """Largest chunk length (in steps) whose decay scale r**-E stays below MAX_SCALE."""
    limit = math.log(MAX_SCALE) / -math.log1p(-t_decay) if t_decay < 1 else 1
    return max(1, min(requested, int(limit)))


def decay_scale(steps: int, r: float, like: torch.Tensor) -> torch.Tensor:
    """r**-e for e = 0..steps-1, in the dtype and device of ``like``.  # (E,)"""
    e = torch.arange(steps, device=like.device, dtype=like.dtype)
    return torch.exp(-e * math.log(r))


RULES = ("frontprop", "oja")


def gram_pays(P: int, A: int, K: int) -> bool:
    """Whether the Gram scan beats the direct one for P positions, A firing neurons, K inputs.

    Gram: P*P*K + A*P*K multiply-adds in BLAS (about ten times the speed of the compiled loops)
    plus up to A*P*P/2 simple updates in the scan; direct: A*P*K multiply-adds in the scan.
    Dividing both by P*K gives the test below.
    """
    return (P + A) / 10 + A * P / (8 * K) < A


def sequential_chunk(x, valid, weight, threshold, w_boost, t_decay, out, solver=None, *,
                     rule="frontprop", k_winners=None, k_output=False, repulsion=0.0,
                     repulsion_cosine=0.9):
    """Run the exact per-sample rule over one chunk, in place on ``weight`` and ``threshold``.

    x: (E, S, K) unit rows (zero rows where ``valid`` is False); valid: (E, S) bool;
    weight: (N, K) unit rows; threshold: (N, S); out: (E, S, N) zeros, filled with the fired
    values (y where the neuron fired at that position, 0 elsewhere) and returned. On CPU the per-neuron walks run compiled
    (``fpwb.layers.kernels``, scan "gram" or "direct", picked by cost); on other devices they run as
    vectorised firing rounds ("rounds"). ``solver`` forces one of the three (tests use it).
    With ``k_winners`` or ``repulsion`` (neurons interact) the compiled position-major walk runs
    instead (on CPU; other devices copy the chunk there and back), "gram" or "direct" as above.
    """
    oja = rule == "oja"
    if k_winners is not None and k_winners >= weight.shape[0]:
        k_winners = None  # every fired neuron is among the k most excited
    if k_winners is not None or repulsion > 0:
        scan = solver if solver in ("gram", "direct") else "auto"
        fired, won = sequential_positions(x, valid, weight, threshold, w_boost, t_decay, scan=scan,
                                          oja=oja, k_winners=k_winners or 0, repulsion=repulsion,
                                          repulsion_cosine=repulsion_cosine)
        return out.copy_(fired * won if k_output else fired)
    if solver is None:
        solver = "auto" if x.device.type == "cpu" else "rounds"
    if solver == "rounds":
        return sequential_rounds(x, valid, weight, threshold, w_boost, t_decay, out, oja=oja)
    return sequential_cpu(x, valid, weight, threshold, w_boost, t_decay, out, scan=solver, oja=oja)


def scaled_projections(x, valid, weight, threshold, r):
    """One matmul for the whole chunk: scaled projections and which neurons fire anywhere.

    Returns flat x (P, K), the decay scale r**-e per position (P,), u = (w . x) * scale (N, P) and
    a mask of the neurons whose projection reaches their threshold at some valid position (N,).
    """
    E, S, K = x.shape
    scale = decay_scale(E, r, x).repeat_interleave(S)  # (P,)
    flat_x = x.reshape(E * S, K)
    u = (weight @ flat_x.T).mul_(scale)  # (N, P)
    if S == 1 and bool(valid.all()):  # one slot, every position valid: one reduction
        fires = u.amax(1) >= threshold[:, 0]
    else:
        fires = ((u.view(-1, E, S) >= threshold.unsqueeze(1)) & valid).flatten(1).any(1)
    return flat_x, scale, u, fires


def silent_steps(x, valid, weight, threshold, t_decay) -> int:
    """How many leading steps of x (E, S, K) fire no neuron from the current state (E when none
    does). Over those steps the layer only decays its thresholds, in either mode."""
    E, S, _ = x.shape
    _, _, u, fires = scaled_projections(x, valid, weight, threshold, 1.0 - t_decay)
    if not bool(fires.any()):
        return E
    reached = (u.view(-1, E, S) >= threshold.unsqueeze(1)) & valid  # (N, E, S)
    return int(reached.any(2).any(0).to(torch.uint8).argmax())


def sequential_positions(x, valid, weight, threshold, w_boost, t_decay, scan="auto", oja=False,
                         k_winners=0, repulsion=0.0, repulsion_cosine=0.9):
    """Exact rule with interacting neurons, position by position (``kernels.scan_positions``).

    Shapes as in :func:`sequential_chunk`; returns (fired values, learned) both (E, S, N).
    """
    device = x.device
    if device.type != "cpu":
        w_cpu, t_cpu = weight.cpu(), threshold.cpu()
        out, won = sequential_positions(x.cpu(), valid.cpu(), w_cpu, t_cpu, w_boost, t_decay, scan,
                                        oja, k_winners, repulsion, repulsion_cosine)
        weight.copy_(w_cpu)
        threshold.copy_(t_cpu)
        return out.to(device), won.to(device)
    E, S, K = x.shape
    N = weight.shape[0]
    P = E * S
    r = 1.0 - t_decay
    flat_x, scale, u, active = scaled_projections(x, valid, weight, threshold, r)
    out = x.new_zeros(N, P)
    won = torch.zeros(N, P, dtype=torch.bool)
    A = int(active.sum())
    if A:
        use_gram = scan == "gram" or (scan == "auto" and gram_pays(P, A, K))
        gram = (flat_x @ flat_x.T) * scale if use_gram else x.new_zeros(1, 1)
        w = weight.contiguous().clone()
        level = threshold.contiguous().clone()
        kernels.scan_positions(u.contiguous().numpy(), kernels.as_array(flat_x), gram.numpy(),
                               w.numpy(), scale.numpy(), kernels.as_array(valid.reshape(P)),
                               torch.arange(P).remainder_(S).numpy(), active.numpy(),
                               level.numpy(), w_boost, k_winners, repulsion, repulsion_cosine,
                               oja, use_gram, out.numpy(), won.numpy())
        weight.copy_(w)
        threshold.copy_(level)
    threshold.mul_(r ** E)
    return out.T.reshape(E, S, N), won.T.reshape(E, S, N)


def sequential_cpu(x, valid, weight, threshold, w_boost, t_decay, out, scan="auto", oja=False):
    """CPU solver: one matmul for all projections, then compiled per-neuron scans that update
    ``weight`` and ``threshold`` in place and write the fired values straight into the output."""
    E, S, K = x.shape
    P = E * S
    r = 1.0 - t_decay
    flat_x, scale, u, fires = scaled_projections(x, valid, weight, threshold, r)
    fired = out.view(P, -1)  # (P, N)
    neurons = fires.nonzero().squeeze(1)  # (A,) neurons that fire somewhere in the chunk
    if neurons.numel():
        kernels.match_threads()
        positions = (kernels.as_array(valid.reshape(P)), kernels.as_array(torch.arange(P).remainder_(S)),
                     neurons.numpy())
        state = (kernels.as_array(flat_x), weight.numpy(), threshold.numpy())
        if scan == "gram" or (scan == "auto" and gram_pays(P, neurons.numel(), K)):
            gram = (flat_x @ flat_x.T) * scale  # (P, P)
            kernels.scan_gram(u.numpy(), gram.numpy(), (1.0 / scale).numpy(), *positions, *state,
                              w_boost, fired.numpy(), oja)
        else:
            kernels.scan_direct(u.numpy(), state[0], scale.numpy(), *positions, *state[1:],
                                fired.numpy(), w_boost, oja)
    threshold.mul_(r ** E)
    return out


def sequential_rounds(x, valid, weight, threshold, w_boost, t_decay, out, oja=False):
    """Device-generic solver: firing rounds vectorised over neurons (see the module docstring)."""
    E, S, K = x.shape
    N = weight.shape[0]
    r = 1.0 - t_decay
    scale = decay_scale(E, r, x)  # (E,)
    flat_x = x.reshape(E * S, K)  # (P, K), position p = e * S + s
    fired_values = out.view(E * S, N)

    projections = flat_x @ weight.T  # (P, N)
    scaled = projections.view(E, S, N) * scale.view(E, 1, 1)
    scaled.masked_fill_(~valid.unsqueeze(-1), -math.inf)
    level = threshold.T.contiguous()  # (S, N) scaled levels, start of chunk = raw thresholds
    fires = (scaled >= level).view(E * S, N)  # (P, N)
    any_fire = fires.any(0)  # (N,)
    if not bool(any_fire.any()):
        threshold.mul_(r ** E)
        return out

    idx = any_fire.nonzero().squeeze(1)  # (A,) neurons that fire at least once
    w = weight[idx]  # (A, K)
    lev = level[:, idx]  # (S, A)
    fires = fires[:, idx]  # (P, A)
    values = projections[:, idx]  # (P, A)
    position = torch.arange(E * S, device=x.device)
    step_scale = scale.repeat_interleave(S)  # (P,)
    slot = position % S  # (P,)
    cols = torch.arange(idx.numel(), device=x.device)
    valid_flat = valid.reshape(E * S, 1)
    while True:
        first = fires.to(torch.uint8).argmax(0)  # (A,) first firing position of each neuron
        y = values[first, cols]  # (A,)
        fired_values[first, idx] = y
        if oja:
            w += (w_boost * y).unsqueeze(1) * (flat_x[first] - y.unsqueeze(1) * w)
        else:
            w += w_boost * (flat_x[first] - w)
            w /= w.norm(dim=1, keepdim=True)
        lev[slot[first], cols] = y * step_scale[first]
        # Only positions after each neuron's latest firing can fire it next.
        later = position.unsqueeze(1) > first  # (P, A)
        values = flat_x @ w.T  # (P, A)
        scaled = values * step_scale.unsqueeze(1)
        fires = (scaled.view(E, S, -1) >= lev).view(E * S, -1) & later & valid_flat
        still = fires.any(0)  # (A,)
        if not bool(still.all()):
            done = ~still
            weight[idx[done]] = w[done]
            threshold[idx[done]] = lev[:, done].T
            if not bool(still.any()):
                break
            idx, w, lev, fires, values = idx[still], w[still], lev[:, still], fires[:, still], values[:, still]
            cols = torch.arange(idx.numel(), device=x.device)
    threshold.mul_(r ** E)
    return out


def top_k_mask(values, fired, k):
    """Which fired neurons are among the k most excited at each position: values and fired
    (..., N); returns a bool mask (..., N). ``k`` None: every fired neuron."""
    if k is None or k >= values.shape[-1]:
        return fired
    masked = values.masked_fill(~fired, -math.inf)
    top = masked.topk(k, dim=-1).indices
    return torch.zeros_like(fired).scatter_(-1, top, True) & fired


def batch_chunk(x, valid, weight, threshold, w_boost, t_decay, out, solver=None, *, rule="frontprop",
                k_winners=None, k_output=False, repulsion=0.0, repulsion_cosine=0.9):
    """The parallel mini-batch variant, in place on ``weight`` and ``threshold``.

    Every position sees the weights of the chunk start; the thresholds follow the stream exactly
    as in sequential mode (a firing sets the neuron's threshold at that slot to y, every
    threshold decays once per step). So a neuron fires where its chunk-start projection reaches
    the running level: the decayed start threshold, or its last firing value, decayed since.
    This is sequential mode with the weight updates held to the chunk end, where the updates of
    a neuron that fired at k positions combine into one move toward the mean m of those inputs,
    worth k sequential steps: ``w <- normalise(w + (1 - (1 - w_boost)**k) * (m - w))`` (k = 1 is
    exactly the sequential update). Shapes and ``out`` as in :func:`sequential_chunk`.

    Switches: ``k_winners``: at each position only the k most excited fired neurons learn (their
    firings move the weights and their thresholds; ``k_output``: only they output).
    ``rule="oja"``: the summed Oja update ``w + w_boost * sum_e y_e (x_e - y_e w)`` over those
    positions, not renormalised. ``repulsion``: each learning neuron adds
    ``repulsion * (w - w_m) / |w - w_m|`` once per chunk for each neuron m whose chunk-start
    weights have cosine > ``repulsion_cosine`` with its own.

    Solvers: "compiled" (CPU) walks the positions in ``kernels.batch_walk`` and moves the plain
    rule's weights with ``kernels.batch_move``, touching only the firings; "tensor" (the default
    on other devices) finds the firings of the plain rule from a running maximum over the chunk
    and moves the weights with matmuls (with ``k_winners`` neurons interact: the walk runs on
    CPU). ``solver`` forces one (tests use it).
    """
    E, S, K = x.shape
    N = weight.shape[0]
    r = 1.0 - t_decay
    if k_winners is not None and k_winners >= N:
        k_winners = None  # every fired neuron is among the k most excited
    if solver is None:
        solver = "compiled" if x.device.type == "cpu" else "tensor"
    scale = decay_scale(E, r, x)  # (E,)
    flat_x = x.reshape(E * S, K)  # (P, K)
    values = flat_x @ weight.T  # (P, N)
    if solver == "tensor" and k_winners is None:
        scaled = (values.view(E, S, N) * scale.view(E, 1, 1)).masked_fill_(~valid.unsqueeze(-1), -math.inf)
        running = scaled.cummax(0).values  # (E, S, N) highest scaled value up to each step
        before = torch.cat([torch.full_like(running[:1], -math.inf), running[:-1]])
        learn = (scaled >= torch.maximum(before, threshold.T)).view(E * S, N)
        torch.mul(values, learn, out=out.view(E * S, N))
        threshold.copy_(torch.maximum(threshold, running[-1].T))
    else:
        learn = batch_firings(values, scale.repeat_interleave(S), valid.reshape(E * S),
                              torch.arange(E * S, device=x.device).remainder_(S), threshold,
                              k_winners or 0, k_output, out.view(E * S, N))
    if solver == "compiled" and rule == "frontprop" and repulsion == 0 and x.device.type == "cpu":
        kernels.match_threads()
        kernels.batch_move(learn.numpy(), kernels.as_array(flat_x), weight.numpy(), w_boost)
    else:
        batch_move(flat_x, learn, values, weight, w_boost, rule, repulsion, repulsion_cosine)
    threshold.mul_(r ** E)
    return out


def batch_firings(values, scale, valid, slot, threshold, k_winners, k_output, out):
    """Run ``kernels.batch_walk`` (on CPU; other devices copy there and back). Flat shapes:
    values and out (P, N) (zeros in, fired values out), scale, valid and slot (P,); threshold
    (N, S) becomes the chunk-end level. Returns where each neuron learned, (P, N) bool."""
    cpu = values.device.type == "cpu"
    level = threshold if cpu else threshold.cpu()  # the walk updates it in place
    fired = out if cpu else torch.zeros(out.shape, dtype=out.dtype)
    learn = torch.zeros(values.shape, dtype=torch.bool)
    kernels.batch_walk(kernels.as_array(values.cpu()), kernels.as_array(scale.cpu()),
                       kernels.as_array(valid.cpu()), kernels.as_array(slot.cpu()), level.numpy(),
                       k_winners, k_output, fired.numpy(), learn.numpy())
    if not cpu:
        threshold.copy_(level)
        out.copy_(fired)
    return learn.to(values.device)


def batch_move(flat_x, learn, values, weight, w_boost, rule, repulsion, repulsion_cosine):
    """The batch weight update with tensors (any device, any switch): flat_x (P, K), learn and
    values (P, N); in place on weight (N, K)."""
    count = learn.sum(0)  # (N,)
    learners = count > 0
    if not bool(learners.any()):
        return
    w = weight[learners]
    if rule == "oja":
        y = (values * learn)[:, learners]  # (P, L) y where learned, else 0
        w = w + w_boost * (y.T @ flat_x - y.pow(2).sum(0).unsqueeze(1) * w)
    else:
        sums = learn[:, learners].T.to(flat_x.dtype) @ flat_x  # (L, K)
        k = count[learners].to(flat_x.dtype).unsqueeze(1)
        w = w + (1.0 - (1.0 - w_boost) ** k) * (sums / k - w)
    if repulsion > 0:
        norms = weight.norm(dim=1)
        dots = weight[learners] @ weight.T  # (L, N)
        close = dots > repulsion_cosine * norms[learners].unsqueeze(1) * norms
        close[torch.arange(len(w)), learners.nonzero().squeeze(1)] = False
        dist = (norms[learners].unsqueeze(1) ** 2 + norms ** 2 - 2 * dots).clamp_min(0).sqrt()
        push = torch.where(close & (dist > 0), repulsion / dist.clamp_min(1e-30), dist.new_zeros(()))
        w = w + push.sum(1, keepdim=True) * weight[learners] - push @ weight
    weight[learners] = w if rule == "oja" else w / w.norm(dim=1, keepdim=True)
