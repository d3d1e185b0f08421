"""Homeostatic thresholds: the Frontprop rule, with each threshold also tracking a target firing
rate. After every step (sample) each threshold decays and then moves by
``gain * (fired - target_rate)`` (fired 1 where the neuron fired at that slot during the step, else
0): a neuron that never fires keeps lowering its threshold, below zero if it has to, toward
``-gain * target_rate / t_decay``, so it fires once its best cosine reaches that; one that fires
more often than the target raises it (a neuron firing at rate rho settles near
``gain * (rho - target_rate) / t_decay``).

Under the plain rule a neuron whose weights have a negative cosine with every input can never
fire (its threshold decays toward 0 from above); here it does. Thresholds may go negative, and a
fired neuron's output y may then be negative too. The scans assume the plain threshold dynamics,
so sequential mode runs the reference walk; batch mode has its own threshold walk.
"""
from .base import check_number
from .frontprop import Frontprop


class Homeostatic(Frontprop):
    """Frontprop with thresholds that also track a target firing rate."""

    name = "homeostatic"
    plain_thresholds = False

    def __init__(self, target_rate: float = 0.05, gain: float = 0.01):
        self.target_rate = check_number("target_rate", target_rate, low=0.0, high=1.0)
        self.gain = check_number("gain", gain, low=0.0, low_open=True)

    def settings(self):
        return {"target_rate": self.target_rate, "gain": self.gain}

    def end_step(self, threshold, *, t_decay, fired):
        return threshold * (1.0 - t_decay) + self.gain * (fired.to(threshold.dtype) - self.target_rate)
