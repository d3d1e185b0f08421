"""What FpLinear and FpConv2d share: hyper-parameters, state buffers, input checks, learning switch."""
from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import threading

import torch
from torch import nn

from .. import rules
from . import engine, kernels
from .kernels import SAFE_EXPONENT

MODES = ("sequential", "batch", "reference")
#: The dtypes the layers compute in (the compiled kernels are built for these).
DTYPES = (torch.float32, torch.float64)
#: While nothing fires, the learning loop checks this many positions ahead with one matmul.
SILENT_LOOKAHEAD = 1024
#: Default of ``repulsion_cosine``: neurons closer than this (cosine of their weights) repel.
REPULSION_COSINE = 0.9


@contextlib.contextmanager
def deferred_interrupt():
    """Hold a Ctrl-C (SIGINT) that arrives inside the block until the block is done, then raise it
    as the previous handler would (KeyboardInterrupt by default). Only the main thread receives
    signals; elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    caught = []
    signal.signal(signal.SIGINT, lambda signum, frame: caught.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        if callable(previous):
            previous(signal.SIGINT, caught[0])
        else:
            raise KeyboardInterrupt


def check_hyperparameter(name: str, value) -> float:
    """A positive, finite real number (not a bool, not a string) as a float, or a ValueError that
    names the parameter. Every hyper-parameter of the layers goes through ``rules.check_number``."""
    return rules.base.check_number(name, value, low=0.0, low_open=True)


def make_generator(seed) -> torch.Generator | None:
    """A CPU generator from an int seed; a Generator passes through; None means torch's global RNG."""
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int or a torch.Generator, got {seed!r}")
    if not -2 ** 63 <= seed < 2 ** 64:
        raise ValueError(f"seed must lie in [-2**63, 2**64) (torch's generator range), got {seed!r}")
    return torch.Generator().manual_seed(seed)




def power_of_two_scale(peak: torch.Tensor) -> torch.Tensor:
    """2**-e with 2**e <= peak < 2**(e + 1), where peak > 0, else 1: multiplying by it is exact and
    brings the largest magnitude into [1, 2)."""
    exponent = torch.frexp(torch.where(peak > 0, peak, torch.ones_like(peak))).exponent - 1
    return torch.ldexp(torch.ones_like(peak), -exponent.to(peak.dtype))


def unit_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows scaled to unit length, and which rows were non-zero.  x: (..., K)

    The direction of any non-zero finite row is defined, however large or small its values: a row
    whose norm overflows or is tiny (its squares may have underflowed) is first scaled exactly by
    a power of two; other rows are left as they are, so their results do not change by a bit."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)  # (..., 1)
    low, high = torch.aminmax(norm.detach()) if norm.numel() else (norm.new_ones(()), norm.new_ones(()))
    if float(low) < 2.0 ** -SAFE_EXPONENT or math.isinf(float(high)):  # all-zero rows are here too
        risky = (norm < 2.0 ** -SAFE_EXPONENT) | torch.isinf(norm)
        peak = torch.where(risky, x.abs().amax(dim=-1, keepdim=True) if x.shape[-1] else norm, norm)
        x = torch.where(risky, x * power_of_two_scale(peak), x)
        norm = torch.where(risky, x.norm(dim=-1, keepdim=True), norm)
    return x / norm.clamp_min(torch.finfo(x.dtype).tiny), norm.squeeze(-1) > 0


class FpLayer(nn.Module):
    """Base of the Frontprop layers. Subclasses set ``weight`` (N, ...) and ``threshold`` buffers.

    Learning happens in ``forward`` while the layer is learning: in training mode (``train()``, the
    default) and not frozen (``freeze()``). Otherwise a forward maps inputs with the current state
    and changes nothing.

    Switches beyond the plain rule (defaults keep it; all can be set live, validated):

    - ``rule``: what a neuron does when it fires, a name of ``fpwb.rules.names()`` or a
      ``fpwb.rules.Rule`` object: ``"frontprop"`` (the default: a fired neuron moves to
      ``normalise(w + w_boost (x - w))``), ``"oja"``, ``"per_neuron_rate"``, ``"homeostatic"``,
      ``"soft_wta"``, ``"rank_k"`` (see each module of ``fpwb.rules``). ``layer.rule`` is the
      rule object.
    - ``k_winners`` (int or None): lateral inhibition by k-winners-take-all. At each position
      (sample; for FpConv2d each output location) only the k most excited of the fired neurons
      learn (weights and threshold); ties go to the lower neuron index. The others keep their
      weights and thresholds. ``k_output``: the losers' output is 0 as well (in every forward,
      learning or not); otherwise every fired neuron outputs its y.
    - ``repulsion`` (>= 0) and ``repulsion_cosine`` (in [-1, 1)): a learning neuron j is also
      pushed away from every other neuron m whose weights have cosine > ``repulsion_cosine``
      with its own: ``w_j += repulsion * (w_j - w_m) / |w_j - w_m|`` (a step of length
      ``repulsion`` straight away from m) for each such m, before the renormalisation. All
      learners of one position see the weights of the start of that position. Repulsion costs
      O(N * inputs) per learning neuron (its cosine with every other neuron).

    ``mode``: ``"sequential"`` (the exact per-position rule, fast), ``"batch"`` (weights held over
    a chunk, see ``fpwb.layers.engine.batch_chunk``) or ``"reference"`` (the rule's plain step,
    one position at a time: slow, obvious, the truth the fast paths are tested against).

    ``fire_count`` counts, per neuron, the positions where its output was non-zero while learning
    (with ``k_output``: where it won); ``learn_count`` the positions where it learned (moved its
    weights).
    """

    def __init__(self, *, w_boost, t_decay, mode, normalize_output, bias, chunk_size,
                 rule="frontprop", k_winners=None, k_output=False, repulsion=0.0,
                 repulsion_cosine=REPULSION_COSINE):
        super().__init__()
        if bias:
            raise ValueError(
                f"{type(self).__name__} has no bias: the threshold is its only offset; pass bias=False")
        self.w_boost = w_boost
        self.t_decay = t_decay
        self.mode = mode
        if not isinstance(normalize_output, bool):
            raise ValueError(f"normalize_output must be True or False, got {normalize_output!r}")
        self.normalize_output = normalize_output
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        self.chunk_size = chunk_size
        self.rule = rule
        self.k_winners = k_winners
        self.k_output = k_output
        self.repulsion = repulsion
        self.repulsion_cosine = repulsion_cosine
        self.frozen = False
        self.solver = None

    # Hyper-parameters are validated on every assignment (widgets and sweeps set them live).
    @property
    def w_boost(self) -> float:
        return self._w_boost

    @w_boost.setter
    def w_boost(self, value):
        value = check_hyperparameter("w_boost", value)
        rule = getattr(self, "_rule", None)
        if rule is not None and value >= rule.max_w_boost:
            raise ValueError(f"w_boost must be below {rule.max_w_boost:g} under rule {rule!r} "
                             f"(larger steps diverge), got {value!r}")
        self._w_boost = value

    @property
    def t_decay(self) -> float:
        return self._t_decay

    @t_decay.setter
    def t_decay(self, value):
        value = check_hyperparameter("t_decay", value)
        if value >= 1:
            raise ValueError(f"t_decay must be below 1 (thresholds shrink by 1 - t_decay), got {value!r}")
        self._t_decay = value

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value):
        if value not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {value!r}")
        rule = getattr(self, "_rule", None)
        if value == "batch" and rule is not None and not rule.has_batch:
            raise ValueError(f"rule {rule!r} has no batch form; use mode 'sequential' or 'reference'")
        self._mode = value

    @property
    def rule(self) -> rules.Rule:
        return self._rule

    @rule.setter
    def rule(self, value):
        rule = rules.get(value)
        rule.check_switches(k_winners=getattr(self, "_k_winners", None),
                            repulsion=getattr(self, "_repulsion", 0.0))
        if getattr(self, "_w_boost", 0.0) >= rule.max_w_boost:
            raise ValueError(f"rule {rule!r} needs w_boost below {rule.max_w_boost:g}, "
                             f"the layer has {self._w_boost!r}")
        if getattr(self, "_mode", "sequential") == "batch" and not rule.has_batch:
            raise ValueError(f"rule {rule!r} has no batch form; use mode 'sequential' or 'reference'")
        self._rule = rule

    @property
    def solver(self):
        """Force a solver (tests do): sequential "gram", "direct", "rounds" or "reference"; batch
        "compiled" or "tensor". None picks by device, rule, switches and cost."""
        return self._solver

    @solver.setter
    def solver(self, value):
        known = sorted({s for mode in engine.SOLVERS.values() for s in mode})
        if value is not None and value not in known:
            raise ValueError(f"solver must be None or one of {known}, got {value!r}")
        self._solver = value

    @property
    def k_winners(self):
        return self._k_winners

    @k_winners.setter
    def k_winners(self, value):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"k_winners must be None or a positive int, got {value!r}")
        if value is None and getattr(self, "_k_output", False):
            raise ValueError("k_output needs k_winners: set k_output=False first")
        if hasattr(self, "_rule"):
            self._rule.check_switches(k_winners=value, repulsion=getattr(self, "_repulsion", 0.0))
        self._k_winners = value

    @property
    def k_output(self) -> bool:
        return self._k_output

    @k_output.setter
    def k_output(self, value):
        if not isinstance(value, bool):
            raise ValueError(f"k_output must be True or False, got {value!r}")
        if value and self.k_winners is None:
            raise ValueError("k_output=True needs k_winners (the number of winners that output)")
        self._k_output = value

    @property
    def repulsion(self) -> float:
        return self._repulsion

    @repulsion.setter
    def repulsion(self, value):
        number = rules.base.check_number("repulsion", value, low=0.0)
        if hasattr(self, "_rule"):
            self._rule.check_switches(k_winners=self.k_winners, repulsion=number)
        self._repulsion = number

    @property
    def repulsion_cosine(self) -> float:
        return self._repulsion_cosine

    @repulsion_cosine.setter
    def repulsion_cosine(self, value):
        self._repulsion_cosine = rules.base.check_number("repulsion_cosine", value, low=-1.0, high=1.0,
                                                         high_open=True)

    def learning_setup(self) -> engine.Learning:
        """The rule, its switches and the solver, as the engine takes them."""
        return engine.Learning(rule=self.rule, w_boost=self.w_boost, t_decay=self.t_decay,
                               k_winners=self.k_winners, k_output=self.k_output,
                               repulsion=self.repulsion, repulsion_cosine=self.repulsion_cosine,
                               solver=self.solver)

    @property
    def learning(self) -> bool:
        """True when a forward pass changes the layer (training mode and not frozen)."""
        return self.training and not self.frozen

    def freeze(self):
        """Stop learning: forward passes map inputs with the current state and change nothing."""
        self.frozen = True
        return self

    def unfreeze(self):
        self.frozen = False
        return self

    def _init_state(self, n: int, k: int, seed, device, dtype):
        """Register ``weight`` (Gaussian, unit rows), ``fire_count`` and ``samples_seen``."""
        generator = make_generator(seed)
        dtype = dtype or torch.get_default_dtype()
        if dtype not in DTYPES:
            raise ValueError(f"{type(self).__name__} computes in float32 or float64 (its compiled "
                             f"kernels), got dtype={dtype}")
        weight = torch.randn(n, k, generator=generator, dtype=dtype)
        weight /= weight.norm(dim=1, keepdim=True)
        self.register_buffer("weight", weight.to(device))
        self.register_buffer("fire_count", torch.zeros(n, dtype=torch.long, device=device))
        self.register_buffer("learn_count", torch.zeros(n, dtype=torch.long, device=device))
        self.register_buffer("samples_seen", torch.zeros((), dtype=torch.long, device=device))

    def _check_tensor(self, x) -> torch.Tensor:
        """Type, device and finiteness checks; returns x in the layer's dtype."""
        name = type(self).__name__
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name} expects a torch.Tensor, got {type(x).__name__}")
        if x.dtype == torch.bool or x.is_complex():
            raise ValueError(f"{name} expects real-valued input (float or uint8 images), got {x.dtype}")
        if x.device != self.weight.device:
            raise ValueError(f"{name} lives on {self.weight.device}, input is on {x.device}")
        if self.weight.dtype not in DTYPES:
            raise ValueError(f"{name} computes in float32 or float64; its state is {self.weight.dtype} "
                             f"(after .half() or .to()?): call .float() or .double()")
        if self.weight.device.type == "meta":
            raise ValueError(f"{name} is on the meta device, which holds no values to learn from: "
                             f"move it to a real device (.to('cpu') and fresh weights) first")
        # A finite sum proves every value finite (NaN and Inf propagate); only an overflowing sum
        # of finite values needs the element-wise check.
        if not (math.isfinite(float(x.detach().sum())) or bool(torch.isfinite(x).all())):
            raise ValueError(f"{name} input contains NaN or Inf values")
        cast = x.to(self.weight.dtype)
        if cast.dtype != x.dtype and not (math.isfinite(float(cast.detach().sum())) or bool(torch.isfinite(cast).all())):
            raise ValueError(f"{name} computes in {self.weight.dtype}: input values of up to "
                             f"{float(x.abs().max()):.3g} overflow it (largest finite "
                             f"{torch.finfo(self.weight.dtype).max:.3g}); scale the input or use a float64 layer")
        return cast

    @contextlib.contextmanager
    def _chunk_guard(self, *, weights: bool):
        """One chunk of a learning forward is applied whole or not at all.

        Ctrl-C (SIGINT, in the main thread) is held until the chunk is done and then raised, so an
        interrupted call leaves exactly the state after its first k samples, with ``samples_seen``
        and ``fire_count`` telling the truth. On an exception inside the chunk the thresholds and
        counters are put back; the weights too when ``weights`` (solvers that write them from
        Python; the compiled kernels allocate everything before they write, so an error in a
        compiled chunk comes before its weights change)."""
        state = [self.threshold, self.fire_count, self.learn_count, self.samples_seen]
        state += [self.weight] if weights else []
        with torch.inference_mode(False):  # state made inside inference mode must stay normal tensors
            saved = [b.clone() for b in state]
        with deferred_interrupt():
            try:
                yield
            except BaseException:
                for buffer, copy in zip(state, saved):
                    buffer.copy_(copy)
                raise

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        """Check everything first, then copy: a load that fails (missing or extra keys under
        ``strict``, wrong shapes, values no layer can hold) leaves the layer untouched. A state
        without thresholds (an FpConv2d that never ran) removes the layer's thresholds."""
        given = {key[len(prefix):]: value for key, value in state_dict.items()
                 if key.startswith(prefix) and "." not in key[len(prefix):]}
        lazy = self._lazy_buffers()
        missing = [name for name in self._buffers if name not in given and name not in lazy]
        unexpected = [name for name in given if name not in self._buffers]
        if strict and (missing or unexpected):
            missing_keys.extend(prefix + name for name in missing)
            unexpected_keys.extend(prefix + name for name in unexpected)
            return
        shapes = {name: tuple(b.shape) for name, b in self._buffers.items() if b is not None}
        shapes.update(self._expected_shapes(given))
        wrong = [f"{prefix}{name}: expected shape {shapes[name]}, got {tuple(given[name].shape)}"
                 for name in given if name in shapes and tuple(given[name].shape) != shapes[name]]
        if wrong:
            error_msgs.extend(f"size mismatch for {w}" for w in wrong)
            return
        self._check_loaded({name: value for name, value in given.items() if name in self._buffers})
        for name in self._buffers:
            if name in given:
                value = given[name].detach()
                if self._buffers[name] is None:
                    self._buffers[name] = value.to(dtype=self.weight.dtype, device=self.weight.device).clone()
                else:
                    self._buffers[name].copy_(value)
            elif name in lazy:
                self._buffers[name] = None

    def _lazy_buffers(self) -> tuple[str, ...]:
        """Buffers a fresh layer may lack (FpConv2d's thresholds before its first forward)."""
        return ()

    def _expected_shapes(self, given: dict) -> dict:
        """Shapes of lazy buffers a state may bring (name -> shape)."""
        return {}

    def _check_loaded(self, values: dict):
        """Refuse (ValueError) a state no layer of this rule can hold: NaN or Inf, weight rows far
        from unit length, negative thresholds (rules with plain thresholds), negative counters."""
        name = type(self).__name__
        weight = values.get("weight")
        if weight is not None:
            weight = weight.reshape(len(weight), -1).double()
            if not bool(torch.isfinite(weight).all()):
                raise ValueError(f"{name}: the loaded weight holds NaN or Inf")
            norms = weight.norm(dim=1)
            tolerance = 1e-3 if self.rule.renormalise else 0.5
            if bool(((norms - 1).abs() > tolerance).any()):
                raise ValueError(f"{name}: loaded weight rows must have unit length (within {tolerance:g} "
                                 f"under rule {self.rule!r}); norms range {float(norms.min()):.4g}.."
                                 f"{float(norms.max()):.4g}")
        threshold = values.get("threshold")
        if threshold is not None:
            if not bool(torch.isfinite(threshold).all()):
                raise ValueError(f"{name}: the loaded thresholds hold NaN or Inf")
            if self.rule.plain_thresholds and bool((threshold < 0).any()):
                raise ValueError(f"{name}: loaded thresholds must be >= 0 under rule {self.rule!r} "
                                 f"(its thresholds never go below 0), got {float(threshold.min()):.4g}")
        for counter in ("fire_count", "learn_count", "samples_seen"):
            value = values.get(counter)
            if value is not None and (value.is_floating_point() or bool((value < 0).any())):
                raise ValueError(f"{name}: the loaded {counter} must hold counts (integers >= 0)")

    def _run(self, x, valid, weight, threshold) -> torch.Tensor:
        """Apply the rule to x (E, S, K) unit rows (or ``Patches``), valid (E, S); weight (N, K) and
        threshold (N, S) are views of the buffers, updated in place.

        Returns the fired values (E, S, N). Learns in chunks of whole steps when learning.
        """
        if not self.learning:
            values = engine.projections(engine.solver_input(x), weight)  # (E, S, N)
            fired = (values >= threshold.T) & valid.unsqueeze(-1)
            if self.k_output:
                fired = engine.top_k_mask(values, fired, self.k_winners)
            return values * fired
        E, S, _ = x.shape
        if E == 0:
            return x.new_zeros(0, S, weight.shape[0])
        learning = self.learning_setup()
        if self.mode == "reference":
            learning = dataclasses.replace(learning, solver="reference")
        mode = "batch" if self.mode == "batch" else "sequential"
        engine.check_solver(mode, learning)
        steps = engine.max_steps(self.t_decay, max(1, self.chunk_size // S))
        # Until the layer first fires, look ahead over a longer stretch: one large matmul instead
        # of several chunk-sized ones (silent steps only decay the thresholds). Whole chunks, so
        # that batch chunks keep their places in the stream. The choice depends on the state
        # alone (fire_count), so a restored layer computes bit for bit what the original does.
        lookahead = steps * max(1, engine.max_steps(self.t_decay, SILENT_LOOKAHEAD // S) // steps)
        solve = engine.batch_chunk if mode == "batch" else engine.sequential_chunk
        # (E, S, N), filled chunk by chunk: batch chunks write every entry, sequential ones the firings
        out = self._output_buffer(x, (E, S, weight.shape[0]), mode)
        first_step = int(self.samples_seen)
        full_guard = not (engine.writes_in_kernels(mode, learning, x.device) and self.rule.renormalise)
        start = 0
        quiet = learning.quiet_until_fired and not bool(self.fire_count.any())
        while start < E:
            if quiet:
                span = slice(start, start + lookahead)
                with self._chunk_guard(weights=False):
                    skip = engine.silent_steps(engine.solver_input(x[span]), valid[span], weight, threshold,
                                               self.t_decay)
                    quiet = skip == len(x[span])
                    if mode == "batch" and not quiet:
                        skip -= skip % steps
                    threshold.mul_((1.0 - self.t_decay) ** skip)
                    out[start:start + skip].zero_()
                    self.samples_seen += skip
                start += skip
                if quiet:
                    continue
            chunk = slice(start, start + steps)
            with self._chunk_guard(weights=full_guard):
                solve(engine.solver_input(x[chunk]), valid[chunk], weight, threshold, self.learn_count, out[chunk],
                      learning=learning, step=first_step + start, fire_count=self.fire_count)
                if not self.rule.renormalise and not bool(torch.isfinite(weight).all()):
                    raise ValueError(f"rule {self.rule!r} diverged (weights left the finite numbers) in mode "
                                     f"{self.mode!r} with w_boost={self.w_boost:g}: lower w_boost (or, in batch "
                                     f"mode, chunk_size: a chunk sums its updates); the layer holds the state "
                                     f"after the {int(self.samples_seen) - first_step} samples before that chunk")
                self.samples_seen += len(x[chunk])
            quiet = False
            start += steps
        return out

    def _output_buffer(self, x, shape: tuple, mode: str) -> torch.Tensor:
        """The (E, S, N) output of a learning forward, filled chunk by chunk: batch chunks write
        every entry, sequential ones the firings (zeros in). The chunks count the firings."""
        return x.new_empty(*shape) if mode == "batch" else x.new_zeros(*shape)

    def _finish(self, out: torch.Tensor) -> torch.Tensor:
        """Scale each sample's output (B, ...) to unit length when normalize_output is on."""
        if self.normalize_output:
            dims = tuple(range(1, out.dim()))  # a reduction over strided dims: no copy of a transposed out
            norm = torch.linalg.vector_norm(out, dim=dims).clamp_min_(torch.finfo(out.dtype).tiny)
            out = out.div_(norm.view(-1, *([1] * (out.dim() - 1))))  # out is the layer's own
        return out

    def extra_repr(self) -> str:
        frozen = ", frozen" if self.frozen else ""
        extra = ""
        if self.rule != rules.Frontprop():
            extra += f", rule={self.rule!r}"
        if self.k_winners is not None:
            extra += f", k_winners={self.k_winners}" + (", k_output=True" if self.k_output else "")
        if self.repulsion > 0 or self.repulsion_cosine != REPULSION_COSINE:
            extra += f", repulsion={self.repulsion:g}, repulsion_cosine={self.repulsion_cosine:g}"
        return (f"w_boost={self.w_boost:g}, t_decay={self.t_decay:g}, mode={self.mode!r}, "
                f"normalize_output={self.normalize_output}{extra}{frozen}")
