"""Snapshots of a module's state for "nothing changed" checks."""
import torch


def state(layer):
    """A deep copy of every tensor in the layer's state_dict."""
    return {k: v.clone() for k, v in layer.state_dict().items()}


def assert_same_state(a, b):
    """Two snapshots hold the same keys and bit-identical tensors."""
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
