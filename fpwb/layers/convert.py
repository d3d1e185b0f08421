"""Swap a torch model's ``nn.Linear`` and ``nn.Conv2d`` layers for Frontprop layers of the same shape.

The architecture stays as it is (activations, pooling, reshapes, the forward code of custom
modules); only the layers that backprop would train are replaced by ones that learn in the forward
pass. What cannot be mapped is refused before anything changes, with every reason at once:

- a bias: Frontprop layers have none (the threshold is their only offset). ``bias="error"``
  (default) refuses; ``bias="drop"`` drops it and lists the layer in ``report.dropped_bias``.
- ``nn.Conv2d`` with dilation, groups, a padding mode other than zeros, or ``padding="same"``
  that is not symmetric (even kernels, strides > 1).
- other modules with parameters (``nn.Conv1d``, ``nn.ConvTranspose2d``, ``nn.Embedding``,
  recurrent layers, ...): refused when ``strict`` (default); with ``strict=False`` they are kept
  and listed in ``report.kept`` (backprop or nothing still trains them).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

from torch import nn

from .base import FpLayer
from .conv import FpConv2d
from .linear import FpLinear

BIAS_POLICIES = ("error", "drop")


@dataclass
class ConversionReport:
    """What ``to_frontprop`` did: replaced layers (name, before, after), biases dropped, modules
    with parameters kept as they were."""
    replaced: list = field(default_factory=list)
    dropped_bias: list = field(default_factory=list)
    kept: list = field(default_factory=list)

    def __str__(self):
        lines = [f"{len(self.replaced)} layer(s) replaced by Frontprop layers:"]
        lines += [f"  {name}: {before} -> {after}" for name, before, after in self.replaced]
        if self.dropped_bias:
            lines.append("bias dropped (Frontprop layers have none): " + ", ".join(self.dropped_bias))
        if self.kept:
            lines.append("kept as they were (not mapped): " + ", ".join(self.kept))
        return "\n".join(lines)


def _conv_padding(name, m: nn.Conv2d, problems):
    if isinstance(m.padding, str):
        if m.padding == "valid":
            return (0, 0)
        if all(k % 2 == 1 for k in m.kernel_size) and m.stride == (1, 1):
            return tuple(k // 2 for k in m.kernel_size)
        problems.append(f"{name}: padding='same' with kernel {m.kernel_size} and stride {m.stride} "
                        f"pads unevenly; FpConv2d pads symmetrically")
        return None
    return m.padding


def _check(name, m, bias, strict, problems):
    """Problems that stop the conversion of module m (appended to ``problems``)."""
    if isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is not None and bias == "error":
        problems.append(f"{name}: has a bias, which a Frontprop layer cannot honour (the threshold "
                        f"is its only offset); build it with bias=False or pass bias='drop'")
    if isinstance(m, nn.Conv2d):
        if m.dilation != (1, 1):
            problems.append(f"{name}: dilation {m.dilation}; FpConv2d supports dilation 1 only")
        if m.groups != 1:
            problems.append(f"{name}: groups={m.groups}; FpConv2d supports groups=1 only")
        if m.padding_mode != "zeros":
            problems.append(f"{name}: padding_mode={m.padding_mode!r}; FpConv2d pads with zeros")
        _conv_padding(name, m, problems)
    elif (strict and not isinstance(m, (nn.Linear, FpLayer))
          and any(True for _ in m.parameters(recurse=False))):
        problems.append(f"{name}: {type(m).__name__} has parameters and no Frontprop counterpart "
                        f"(pass strict=False to keep it as it is)")


def _replacement(name, m, layer_kwargs):
    factory = {"device": m.weight.device, "dtype": m.weight.dtype}
    if isinstance(m, nn.Linear):
        return FpLinear(m.in_features, m.out_features, **factory, **layer_kwargs)
    padding = _conv_padding(name, m, [])
    return FpConv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, padding,
                    **factory, **layer_kwargs)


def to_frontprop(model: nn.Module, *, bias: str = "error", strict: bool = True, inplace: bool = False,
                 seed: int | None = None, **layer_kwargs):
    """A copy of ``model`` (the model itself when ``inplace``) whose ``nn.Linear`` / ``nn.Conv2d``
    layers are FpLinear / FpConv2d of the same shape; returns ``(model, ConversionReport)``.

    layer_kwargs go to every Fp layer (w_boost, t_decay, mode, the switches, ...); an int ``seed``
    gives the i-th replaced layer seed + i. Refusals (see the module docstring) raise a
    ValueError naming every offending module, before the model is touched.
    """
    if bias not in BIAS_POLICIES:
        raise ValueError(f"bias must be one of {BIAS_POLICIES}, got {bias!r}")
    if not isinstance(model, nn.Module):
        raise ValueError(f"to_frontprop expects a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, (nn.Linear, nn.Conv2d)):
        raise ValueError("to_frontprop replaces layers inside a model; for a single layer build "
                         "FpLinear / FpConv2d directly")
    problems = []
    for name, m in model.named_modules():
        if name:
            _check(name, m, bias, strict, problems)
    if problems:
        raise ValueError("cannot convert the model to Frontprop:\n  " + "\n  ".join(problems))
    targets = [name for name, m in model.named_modules()
               if isinstance(m, (nn.Linear, nn.Conv2d)) and name]
    if not targets:
        raise ValueError("the model has no nn.Linear or nn.Conv2d layer to replace")
    model = model if inplace else copy.deepcopy(model)
    report = ConversionReport()
    for i, name in enumerate(targets):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, child)
        kwargs = dict(layer_kwargs)
        if seed is not None:
            kwargs["seed"] = seed + i
        new = _replacement(name, old, kwargs)
        setattr(parent, child, new)
        report.replaced.append((name, repr(old), repr(new).split("\n")[0]))
        if old.bias is not None:
            report.dropped_bias.append(name)
    if not strict:
        report.kept = [name for name, m in model.named_modules()
                       if name and not isinstance(m, FpLayer)
                       and any(True for _ in m.parameters(recurse=False))]
    return model, report
