"""Recorder -> TensorBoard: the event files hold what was recorded, read back with tensorboard's
own reader (EventAccumulator)."""
import pytest
import torch

import fpwb
from fpwb.data import simple_patterns
from fpwb.viz.recorder import Recorder

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402


def _read(log_dir):
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0, "images": 0,
                                                           "tensors": 0})
    events.Reload()
    return events


def test_recorder_writes_scalars_histograms_and_weight_images(tmp_path):
    images, _ = simple_patterns(600, seed=0)
    layer = fpwb.FpLinear(49, 8, w_boost=0.05, t_decay=0.01, seed=0)
    with SummaryWriter(tmp_path) as writer:
        recorder = Recorder(layer, every=100, snapshot_every=300, writer=writer, tag="fp")
        recorder.feed(images)
        recorder.close()
    events = _read(tmp_path)
    tags = events.Tags()
    assert {"fp/samples_seen", "fp/fired_share", "fp/active", "fp/firings", "fp/redundant_pairs"} <= set(tags["scalars"])
    assert {"fp/threshold", "fp/fire_count"} <= set(tags["histograms"])
    assert tags["images"] == ["fp/weights"]
    seen = events.Scalars("fp/samples_seen")
    assert [e.step for e in seen] == recorder.samples.tolist() == [0, 100, 200, 300, 400, 500, 600]
    assert [e.value for e in seen] == recorder.samples.float().tolist()
    fired = [e.value for e in events.Scalars("fp/fired_share")]
    assert fired == pytest.approx([float((c > 0).float().mean()) for c in recorder.fire_counts])
    assert [e.value for e in events.Scalars("fp/active")] == recorder.active.float().tolist()
    assert [e.value for e in events.Scalars("fp/firings")] == recorder.firings.float().tolist()
    thresholds = events.Histograms("fp/threshold")
    assert [h.step for h in thresholds] == recorder.samples.tolist()
    last = thresholds[-1].histogram_value
    assert last.num == 8 and last.min == pytest.approx(float(recorder.thresholds[-1].min()))
    assert last.max == pytest.approx(float(recorder.thresholds[-1].max()))
    assert events.Histograms("fp/fire_count")[-1].histogram_value.sum == pytest.approx(float(layer.fire_count.sum()))
    weights = events.Images("fp/weights")
    assert [w.step for w in weights] == recorder.snapshot_samples.tolist() == [0, 300, 600]
    assert (weights[0].height, weights[0].width) == (3 * 8 - 1, 3 * 8 - 1)  # 3 x 3 tiles of 7x7, 1 apart
    assert weights[0].encoded_image_string != weights[-1].encoded_image_string  # the weights moved


def test_hparams_are_written_for_the_hparams_view(tmp_path):
    layer = fpwb.FpLinear(49, 4, w_boost=0.05, t_decay=0.01, k_winners=1, seed=0)
    writer = SummaryWriter(tmp_path)
    recorder = Recorder(layer, every=50, writer=writer)
    recorder.feed(simple_patterns(100, seed=0)[0])
    recorder.write_hparams({"probe": 0.5}, hparams={"seed": 0})
    writer.close()
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = _read(tmp_path)
    data = events.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(data["_hparams_/session_start_info"]).session_start_info
    params = {k: v.string_value or v.number_value or v.bool_value for k, v in session.hparams.items()}
    assert params["w_boost"] == pytest.approx(0.05) and params["neurons"] == 4 and params["k_winners"] == 1
    assert params["layer"] == "FpLinear" and "seed" in session.hparams
    experiment = plugin_data_pb2.HParamsPluginData.FromString(data["_hparams_/experiment"]).experiment
    assert [m.name.tag for m in experiment.metric_infos] == ["probe"]
    assert [e.value for e in events.Scalars("probe")] == [0.5]


def test_recorder_refuses_a_writer_that_is_not_one_and_hparams_without_writer(tmp_path):
    layer = fpwb.FpLinear(4, 2, seed=0)
    with pytest.raises(ValueError, match="SummaryWriter"):
        Recorder(layer, writer=object())
    with pytest.raises(ValueError, match="no writer"):
        Recorder(layer).write_hparams({"a": 1.0})
    with SummaryWriter(tmp_path) as writer, pytest.raises(ValueError, match="metrics must be numbers"):
        Recorder(layer, writer=writer).write_hparams({"a": "x"})
