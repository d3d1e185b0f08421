"""A learning rule of your own: Hebb's rule with the output as the post-synaptic term,
w <- normalise(w + w_boost * y * x), trained in an FpLinear and an FpConv2d and probed against
untrained layers of the same shapes (scikit-learn's digits; runs offline in seconds).
"""
from fpwb import FpConv2d, FpLinear, rules
from fpwb.data import flatten, load
from fpwb.evaluation.probes import embed, linear_probe


def hebb(y, w_boost, count, step, params):
    """The move w' = c * w + d * x as (c, d): arithmetic only, so fpwb compiles it for its kernels."""
    return 1.0, w_boost * y


class Hebb(rules.Rule):
    name = "hebb"
    update = hebb  # the linear form: the fast sequential solvers run it (and renormalise)


def probe(layer, X, y, X_test, y_test):
    """Accuracy of a standardised linear probe on the layer's relu readout."""
    return linear_probe(embed(layer, X, readout="relu"), y, embed(layer, X_test, readout="relu"), y_test)["accuracy"]


(X, y), (X_test, y_test) = load("digits", split="train"), load("digits", split="test")
for name, make, inputs in (("FpLinear(64, 100)", lambda: FpLinear(64, 100, rule=Hebb(), t_decay=0.002, seed=0), flatten),
                           ("FpConv2d(1, 16, 3)", lambda: FpConv2d(1, 16, 3, rule=Hebb(), t_decay=0.02, seed=0), lambda v: v)):
    layer, untrained = make(), make()
    for _ in range(2):  # two passes over the training images
        layer(inputs(X))
    learned = float(((layer.weight - untrained.weight).flatten(1).abs().amax(1) > 1e-6).float().mean())
    print(f"{name}: hebb rule {probe(layer, inputs(X), y, inputs(X_test), y_test):.3f}, untrained "
          f"{probe(untrained, inputs(X), y, inputs(X_test), y_test):.3f} (probe accuracy; {learned:.0%} learned)")
