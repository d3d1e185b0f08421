"""A trained Linear as a Frontprop layer that starts out computing what the Linear computed.

``FpDropIn`` holds an ``fpwb.FpLinear`` whose unit weight rows are the Linear's rows scaled to
unit length; their lengths |w_j| are kept in ``scale``. Its output is put back on the Linear's
scale: ``y_j * |x| * |w_j| = w_j . x`` where neuron j fires (its cosine y_j reaches its
threshold), 0 elsewhere; a bias stays a separate added term that Frontprop does not change. The
thresholds come from a calibration batch: neuron j's threshold is a low quantile of its cosines
over the batch, so at first it fires on nearly every input and the layer is the Linear except on
its most negative outputs. From there the layer learns by the Frontprop rule in every forward
pass while it is in training mode and not frozen (``fpwb.FpLinear``).

Backprop through it: the Fp layer has no gradients of its own, but the output carries the
gradient of the fired part of the linear map with respect to the input (the firing mask held
fixed, as a ReLU does), so layers below a drop-in can still be trained by backprop.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..layers.linear import FpLinear

#: What happens to a Linear's bias: kept as a fixed added term, or refused.
BIAS_POLICIES = ("keep", "error")


def linear_parts(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight (out, in), bias (out,) or None) of an ``nn.Linear`` or a Hugging Face ``Conv1D``
    (GPT-2's Linear, weight stored (in, out))."""
    if isinstance(module, nn.Linear):
        return module.weight, module.bias
    if type(module).__name__ == "Conv1D" and getattr(module, "nf", None) == module.weight.shape[1]:
        return module.weight.T, module.bias
    raise ValueError(f"expected an nn.Linear (or transformers' Conv1D), got {type(module).__name__}")


class FpDropIn(nn.Module):
    """A Frontprop layer in place of a trained Linear, on the Linear's scale.

    weight: the Linear's (out_features, in_features); bias: (out_features,) or None. Thresholds
    start at the FpLinear's 1.0 until ``calibrate`` sets them. fp_kwargs go to the FpLinear (w_boost, t_decay, mode, the rule switches); it is built with
    ``normalize_output=False``. Input (..., in_features); output (..., out_features).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, **fp_kwargs):
        super().__init__()
        if weight.dim() != 2:
            raise ValueError(f"weight must be (out_features, in_features), got {tuple(weight.shape)}")
        if "normalize_output" in fp_kwargs:
            raise ValueError("FpDropIn sets normalize_output=False itself (outputs on the Linear's scale)")
        out_features, in_features = weight.shape
        weight = weight.detach().float() if weight.dtype not in (torch.float32, torch.float64) \
            else weight.detach()
        self.fp = FpLinear(in_features, out_features, normalize_output=False, device=weight.device,
                           dtype=weight.dtype, **fp_kwargs)
        norms = weight.norm(dim=1)  # (N,)
        with torch.no_grad():
            self.fp.weight.copy_(weight / norms.clamp_min(torch.finfo(weight.dtype).tiny).unsqueeze(1))
        self.register_buffer("scale", norms.clone())
        self.register_buffer("bias", None if bias is None else bias.detach().to(weight.dtype).clone())
        self.in_features, self.out_features = in_features, out_features

    @classmethod
    def from_linear(cls, linear: nn.Module, calibration: torch.Tensor, *, quantile: float = 0.01,
                    bias: str = "keep", **fp_kwargs) -> "FpDropIn":
        """The drop-in for a trained ``linear``, thresholds from its inputs on a calibration batch.

        calibration: (M, in_features) inputs the model gave this layer. Each neuron's threshold
        is the k-th smallest of its M cosines, k = max(1, floor(quantile * M)): quantile 0 is the
        smallest, so every calibration input fires every neuron. bias: "keep" (a fixed added
        term) or "error" (refuse a Linear with a bias).
        """
        if bias not in BIAS_POLICIES:
            raise ValueError(f"bias must be one of {BIAS_POLICIES}, got {bias!r}")
        weight, b = linear_parts(linear)
        if b is not None and bias == "error":
            raise ValueError(f"{type(linear).__name__} has a bias; pass bias='keep' to keep it as a "
                             f"fixed added term")
        return cls(weight, b, **fp_kwargs).calibrate(calibration, quantile=quantile)

    def calibrate(self, inputs: torch.Tensor, *, quantile: float = 0.01) -> "FpDropIn":
        """Set each neuron's threshold to the k-th smallest of its cosines with the current weights
        over inputs (M, in_features), k = max(1, floor(quantile * M)), in place; returns self."""
        if not (isinstance(quantile, (int, float)) and 0 <= quantile < 1):
            raise ValueError(f"quantile must lie in [0, 1), got {quantile!r}")
        inputs = inputs.detach().reshape(-1, self.in_features).to(self.fp.weight)
        if len(inputs) == 0:
            raise ValueError("the calibration batch is empty")
        unit = inputs / inputs.norm(dim=1, keepdim=True).clamp_min(torch.finfo(inputs.dtype).tiny)
        cosines = unit @ self.fp.weight.T  # (M, N)
        k = max(1, math.floor(quantile * len(inputs)))
        with torch.no_grad():
            self.fp.threshold.copy_(cosines.kthvalue(k, dim=0).values)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(self.scale.dtype)  # (B, D)
        fired = self.fp(flat.detach())  # (B, N): cosine where fired, 0 elsewhere
        out = fired * (flat.detach().norm(dim=1, keepdim=True) * self.scale)
        if torch.is_grad_enabled() and x.requires_grad:
            weight = self.fp.weight * self.scale.unsqueeze(1)  # (N, D), on the Linear's scale
            linear = (flat @ weight.T) * (fired != 0)
            out = out + (linear - linear.detach())  # the value stays; the gradient is the fired map's
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def calibration_inputs(model: nn.Module, names, ids: torch.Tensor) -> dict:
    """The inputs each named module receives when ``model`` runs on token ids (B, T), without
    gradients: name -> (B * T, in_features)."""
    captured, hooks = {}, []
    try:
        for name in names:
            def hook(_module, args, name=name):
                captured[name] = args[0].detach().reshape(-1, args[0].shape[-1])
            hooks.append(model.get_submodule(name).register_forward_pre_hook(hook))
        with torch.no_grad():
            model(ids)
    finally:
        for h in hooks:
            h.remove()
    return captured


def convert(model: nn.Module, names, calibration_ids: torch.Tensor, *, quantile: float = 0.01,
            bias: str = "keep", **fp_kwargs) -> dict:
    """Replace the named Linear layers of ``model`` (in place) by ``FpDropIn`` layers calibrated on
    ``calibration_ids`` (B, T) token ids; returns name -> FpDropIn. Everything is checked (every
    name is a Linear, biases against the policy) before the model changes."""
    names = list(names)
    if not names:
        raise ValueError("no layer names given to convert")
    problems = []
    for name in names:
        try:
            _, b = linear_parts(model.get_submodule(name))
        except (AttributeError, ValueError) as error:
            problems.append(f"{name}: {error}")
            continue
        if b is not None and bias == "error":
            problems.append(f"{name}: has a bias (pass bias='keep' to keep it as a fixed added term)")
    if bias not in BIAS_POLICIES:
        problems.append(f"bias must be one of {BIAS_POLICIES}, got {bias!r}")
    if problems:
        raise ValueError("cannot convert to Frontprop drop-ins:\n  " + "\n  ".join(problems))
    inputs = calibration_inputs(model, names, calibration_ids)
    converted = {}
    for name in names:
        converted[name] = FpDropIn.from_linear(model.get_submodule(name), inputs[name],
                                               quantile=quantile, bias=bias, **fp_kwargs)
    for name, layer in converted.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layer)
    return converted


def recalibrate(model: nn.Module, names, calibration_ids: torch.Tensor, *, quantile: float = 0.01):
    """Reset the thresholds of the named ``FpDropIn`` layers from their inputs on
    ``calibration_ids`` (B, T), keeping their weights (``FpDropIn.calibrate``)."""
    layers = {name: model.get_submodule(name) for name in names}
    wrong = [name for name, layer in layers.items() if not isinstance(layer, FpDropIn)]
    if wrong:
        raise ValueError(f"recalibrate needs FpDropIn layers; not: {wrong}")
    inputs = calibration_inputs(model, names, calibration_ids)
    for name, layer in layers.items():
        layer.calibrate(inputs[name], quantile=quantile)
