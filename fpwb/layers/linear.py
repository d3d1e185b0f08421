"""FpLinear: a fully connected Frontprop layer."""
from __future__ import annotations

import torch

from . import engine
from .base import REPULSION_COSINE, FpLayer, unit_rows


class FpLinear(FpLayer):
    """N neurons over D inputs that learn in the forward pass, no gradients involved.

    Each sample x (scaled to unit length) gives y = W x; neuron j fires where y_j >= t_j. While
    learning, a fired neuron moves toward x, ``W_j <- normalise(W_j + w_boost (x - W_j))``, and its
    threshold becomes y_j; then every threshold decays by (1 - t_decay). The output is y where fired,
    0 elsewhere, scaled to unit length when ``normalize_output``. All-zero samples give zeros and
    change nothing.

    ``mode="sequential"`` is the exact per-sample rule (sample i+1 sees the state sample i left),
    computed without a loop over samples; ``mode="batch"`` lets a whole chunk of ``chunk_size``
    samples see the weights of the chunk start while the thresholds run as in sequential mode,
    and combines each neuron's updates at the chunk end (see ``fpwb.layers.engine.batch_chunk``).

    Input: (B, in_features) or (in_features,). Output: (B, out_features) or (out_features,).
    State (``state_dict``): ``weight`` (N, D), ``threshold`` (N,), ``fire_count`` (N,),
    ``samples_seen``.

    The rule (``rule=``: a name of ``fpwb.rules.names()`` or a ``fpwb.rules.Rule``) and the
    switches (lateral inhibition by ``k_winners`` / ``k_output``, ``repulsion`` /
    ``repulsion_cosine``): see :class:`fpwb.layers.base.FpLayer`. Their defaults keep the plain
    rule. State also holds ``learn_count`` (N,).
    """

    def __init__(self, in_features: int, out_features: int, *, w_boost: float = 0.02,
                 t_decay: float = 0.0005, mode: str = "sequential", normalize_output: bool = True,
                 bias: bool = False, chunk_size: int = 256, seed=None, device=None, dtype=None,
                 rule="frontprop", k_winners=None, k_output: bool = False,
                 repulsion: float = 0.0, repulsion_cosine: float = REPULSION_COSINE):
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        super().__init__(w_boost=w_boost, t_decay=t_decay, mode=mode,
                         normalize_output=normalize_output, bias=bias, chunk_size=chunk_size,
                         rule=rule, k_winners=k_winners, k_output=k_output, repulsion=repulsion,
                         repulsion_cosine=repulsion_cosine)
        self.in_features = in_features
        self.out_features = out_features
        self._init_state(out_features, in_features, seed, device, dtype)
        self.register_buffer("threshold", torch.ones(out_features, dtype=self.weight.dtype,
                                                     device=self.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.learning:  # one sample, the way an online learner is fed: one compiled call
            with torch.no_grad():
                out = self._learn_one(x)
            if out is not None:
                return out
        x = self._check_tensor(x)
        if x.dim() not in (1, 2) or x.shape[-1] != self.in_features:
            raise ValueError(f"FpLinear expects input of shape (batch, {self.in_features}) or "
                             f"({self.in_features},), got {tuple(x.shape)}")
        single = x.dim() == 1
        x = x.reshape(-1, self.in_features)  # (B, D)
        with torch.no_grad():
            unit, valid = unit_rows(x)
            every = bool(valid.all())
            rows = None if every else valid.nonzero().squeeze(1)
            steps = unit if every else unit[rows]  # (E, D): zero samples are skipped entirely
            fired = self._run(steps.unsqueeze(1), torch.ones(len(steps), 1, dtype=torch.bool,
                                                              device=x.device),
                              self.weight, self.threshold.view(-1, 1))[:, 0]  # (E, N)
            if every:
                out = fired
            else:
                out = x.new_zeros(x.shape[0], self.out_features)  # (B, N)
                out[rows] = fired
            out = self._finish(out)
        return out[0] if single else out

    def _learn_one(self, x) -> torch.Tensor | None:
        """A learning forward of one sample x (D,) or (1, D) through ``engine.single_position``,
        output finished, in x's shape; None when that path does not take it (device, dtype,
        shape, mode, rule, switches, or an input whose length is zero or extreme): the caller
        takes the general one, with its checks."""
        weight = self.weight  # (N, D)
        if not (isinstance(x, torch.Tensor) and x.is_cpu and weight.is_cpu and x.dtype == weight.dtype
                and x.dim() in (1, 2) and x.numel() == self.in_features == x.shape[-1]):
            return None
        learning = self.learning_setup()
        if not engine.single_position_serves(learning, self.mode, x, self.out_features):
            return None
        out = engine.single_position(x.reshape(-1), weight, self.threshold,
                                     (self.learn_count, self.fire_count, self.samples_seen),
                                     learning=learning, normalize_output=self.normalize_output)
        return out if out is None or x.dim() == 1 else out.unsqueeze(0)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " + super().extra_repr()
