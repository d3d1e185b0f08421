import pytest
import torch

from fpwb import FpConv2d, FpLinear
from fpwb.data import simple_patterns
from fpwb.viz.recorder import Recorder


def stream(n=600, seed=0):
    images, labels = simple_patterns(n, noise=0.05, seed=seed)
    return images, labels


def test_feed_records_every_k_samples_and_matches_plain_training():
    images, _ = stream()
    recorded, plain = FpLinear(49, 8, t_decay=0.01, seed=1), FpLinear(49, 8, t_decay=0.01, seed=1)
    rec = Recorder(recorded, every=100, snapshot_every=300)
    rec.feed(images, batch_size=64)
    plain(images.flatten(1))
    assert rec.samples.tolist() == [0, 100, 200, 300, 400, 500, 600]
    assert rec.thresholds.shape == (7, 8)
    assert torch.equal(rec.thresholds[-1], recorded.threshold)
    assert torch.equal(rec.thresholds[0], torch.ones(8))
    # Cutting calls does not change the rule (up to float rounding of the chunked solver).
    torch.testing.assert_close(recorded.weight, plain.weight, atol=1e-4, rtol=0)
    torch.testing.assert_close(recorded.threshold, plain.threshold, atol=1e-4, rtol=0)
    assert rec.fire_counts.shape == (7, 8)
    assert torch.equal(rec.fire_counts[-1], recorded.fire_count)
    assert int(rec.firings.sum()) == int(recorded.fire_count.sum())
    assert rec.active[0] == 0 and bool((rec.active <= 8).all()) and int(rec.active.sum()) > 0
    assert rec.snapshot_samples.tolist() == [0, 300, 600]
    assert rec.weights.shape == (3, 8, 49)
    assert torch.equal(rec.weights[-1], recorded.weight)
    assert not torch.equal(rec.weights[0], rec.weights[-1])


def test_plain_calls_record_once_per_crossing_and_subset_of_neurons():
    images, _ = stream(300)
    layer = FpLinear(49, 6, t_decay=0.01, seed=0)
    rec = Recorder(layer, every=100, neurons=[1, 4], snapshot_every=None)
    for batch in images.flatten(1).split(30):  # calls end at 30, 60, 90, 120, ...
        layer(batch)
    assert rec.samples.tolist() == [0, 120, 210, 300]
    assert rec.thresholds.shape == (4, 2)
    assert torch.equal(rec.thresholds[-1], layer.threshold[[1, 4]])
    assert len(rec.weights) == 0
    layer.eval()
    layer(images.flatten(1))  # not learning: nothing counted, nothing recorded
    assert len(rec) == 4


def test_close_removes_the_hook():
    layer = FpLinear(49, 4, seed=0)
    with Recorder(layer, every=10) as rec:
        assert rec.attached and "attached" in repr(rec)
    layer(stream(50)[0].flatten(1))
    assert len(rec) == 1 and not rec.attached
    assert "records=1" in repr(rec) and "closed" in repr(rec)
    with pytest.raises(ValueError, match="closed"):
        rec.feed(stream(10)[0])


def test_conv_records_once_thresholds_exist():
    images, _ = stream(40)
    layer = FpConv2d(1, 3, 3, t_decay=0.01, seed=0)
    rec = Recorder(layer, every=10, neurons=[0, 2])
    assert len(rec) == 0 and len(rec.weights) == 1  # no thresholds before the first forward
    rec.feed(images, batch_size=16)
    assert rec.samples.tolist() == [10, 20, 30, 40]
    assert rec.thresholds.shape == (4, 2, 5, 5)
    assert rec.fire_counts.shape == (4, 3)


def test_invalid_arguments():
    layer = FpLinear(49, 4)
    with pytest.raises(ValueError, match="every"):
        Recorder(layer, every=0)
    with pytest.raises(ValueError, match="neurons"):
        Recorder(layer, neurons=[4])
    with pytest.raises(ValueError, match="FpLinear or FpConv2d"):
        Recorder(torch.nn.Linear(2, 2))
    rec = Recorder(layer.freeze())
    with pytest.raises(ValueError, match="not learning"):
        rec.feed(stream(10)[0])
