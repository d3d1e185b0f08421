import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from fpwb import FpConv2d, FpLinear  # noqa: E402

from fpwb.viz import plots  # noqa: E402
from fpwb.data import PATTERN_NAMES, SIMPLE_PATTERNS, simple_patterns  # noqa: E402
from fpwb.viz.recorder import Recorder  # noqa: E402


@pytest.fixture(scope="module")
def trained():
    """An FpLinear(49, 12) trained on noisy simple patterns, with its Recorder."""
    images, labels = simple_patterns(1500, noise=0.05, seed=0)
    layer = FpLinear(49, 12, w_boost=0.05, t_decay=0.005, seed=0)
    recorder = Recorder(layer, every=100, snapshot_every=500)
    recorder.feed(images)
    recorder.close()
    return layer, recorder, images, labels


def tile(mosaic, i, ncols, h=7, w=7):
    r, c = divmod(i, ncols)
    return mosaic[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w]


def test_weight_grid_of_a_linear_layer_shows_each_row_as_an_image(trained):
    layer = trained[0]
    fig = plots.weight_grid(layer)
    assert isinstance(fig, Figure)
    im = fig.axes[0].images[0]
    mosaic = np.ma.getdata(im.get_array())
    assert mosaic.shape == (3 * 8 - 1, 4 * 8 - 1)  # 12 tiles in 3 rows of 4, 1 pixel apart
    lim = float(layer.weight.abs().max())
    assert im.get_clim() == pytest.approx((-lim, lim))  # one symmetric scale
    for i in (0, 5, 11):
        np.testing.assert_allclose(tile(mosaic, i, 4), layer.weight[i].view(7, 7).numpy(), rtol=1e-6)
    assert np.isnan(mosaic[7]).all() and np.isnan(mosaic[:, 15]).all()  # gaps are padding
    five = np.ma.getdata(plots.weight_grid(layer, ncols=5).axes[0].images[0].get_array())
    assert five.shape == (3 * 8 - 1, 5 * 8 - 1) and np.isnan(tile(five, 12, 5)).all()  # empty slot
    assert "12 neurons" in fig.axes[0].get_title()


def test_weight_grid_sorted_by_firing(trained):
    layer = trained[0]
    assert int(layer.fire_count.sum()) > 0
    fig = plots.weight_grid(layer, sort_by_firing=True, max_neurons=5, ncols=5)
    order = fig.neuron_order
    assert order.tolist() == layer.fire_count.argsort(descending=True, stable=True)[:5].tolist()
    mosaic = fig.axes[0].images[0].get_array()
    assert mosaic.shape == (7, 5 * 8 - 1)
    for i, neuron in enumerate(order.tolist()):
        np.testing.assert_allclose(tile(mosaic, i, 5), layer.weight[neuron].view(7, 7).numpy(), rtol=1e-6)
    lim = float(layer.weight[order].abs().max())
    assert fig.axes[0].images[0].get_clim() == pytest.approx((-lim, lim))
    with pytest.raises(ValueError, match="fire_count"):
        plots.weight_grid(layer.weight, sort_by_firing=True)


def test_weight_grid_of_conv_kernels_and_rgb():
    conv = FpConv2d(1, 6, 3, seed=0)
    conv(SIMPLE_PATTERNS.unsqueeze(1))
    mosaic = plots.weight_grid(conv).axes[0].images[0].get_array()
    assert mosaic.shape == (2 * 4 - 1, 3 * 4 - 1)
    np.testing.assert_allclose(tile(mosaic, 4, 3, 3, 3), conv.weight[4, 0].numpy(), rtol=1e-6)

    rgb = FpConv2d(3, 4, 2, seed=0)
    fig = plots.weight_grid(rgb)
    mosaic = fig.axes[0].images[0].get_array()
    assert mosaic.shape == (2 * 3 - 1, 2 * 3 - 1, 3)
    lim = float(rgb.weight.abs().max())
    expected = 0.5 + 0.5 * rgb.weight[3].permute(1, 2, 0).numpy() / lim  # 0 is mid grey
    np.testing.assert_allclose(tile(mosaic, 3, 2, 2, 2), expected, rtol=1e-5)
    assert len(fig.axes) == 1  # no colour bar for RGB

    linear_rgb = torch.randn(2, 3 * 4 * 4)
    tiles = plots.weight_tiles(linear_rgb)
    assert tiles.shape == (2, 4, 4, 3)
    assert torch.equal(tiles[1, :, :, 2], linear_rgb[1].view(3, 4, 4)[2])
    with pytest.raises(ValueError, match="image_shape"):
        plots.weight_tiles(torch.randn(2, 10))
    assert plots.weight_tiles(torch.randn(2, 10), image_shape=(2, 5)).shape == (2, 2, 5)


def test_threshold_traces_plot_the_recorded_thresholds(trained):
    recorder = trained[1]
    fig = plots.threshold_traces(recorder, max_lines=5)
    lines = fig.axes[0].get_lines()
    assert len(lines) == 6  # 5 neurons and the mean
    x, y = lines[2].get_data()
    np.testing.assert_array_equal(x, recorder.samples.numpy())
    np.testing.assert_allclose(y, recorder.thresholds[:, 2].numpy())
    np.testing.assert_allclose(lines[-1].get_ydata(), recorder.thresholds.mean(1).numpy(), rtol=1e-6)
    assert x[-1] == 1500

    conv = FpConv2d(1, 3, 3, t_decay=0.01, seed=0)
    rec = Recorder(conv, every=10)
    rec.feed(simple_patterns(40, seed=1)[0])
    fig = plots.threshold_traces(rec)
    np.testing.assert_allclose(fig.axes[0].get_lines()[1].get_ydata(),
                               rec.thresholds[:, 1].mean(dim=(1, 2)).numpy(), rtol=1e-6)
    assert "locations" in fig.axes[0].get_ylabel()
    with pytest.raises(ValueError, match="Recorder"):
        plots.threshold_traces(torch.ones(3))


def test_firing_counts(trained):
    layer, recorder = trained[:2]
    fig = plots.firing_counts(recorder, max_lines=3)
    top, bottom = fig.axes
    np.testing.assert_array_equal(top.get_lines()[0].get_ydata(), recorder.active.numpy())
    lines = bottom.get_lines()
    assert len(lines) == 3
    most = int(layer.fire_count.argmax())
    assert lines[0].get_ydata()[-1] == int(layer.fire_count[most])
    pair = plots.firing_counts((recorder.samples, recorder.fire_counts), max_lines=3)
    np.testing.assert_array_equal(pair.axes[0].get_lines()[0].get_ydata()[1:], recorder.active.numpy()[1:])


def test_coverage_counts_neurons_per_pattern(trained):
    layer, _, images, labels = trained
    responses = plots.class_responses(layer, images, labels)
    assert responses.shape == (12, 6)
    x = images.flatten(1)
    cos = (x / x.norm(dim=1, keepdim=True)) @ layer.weight.T
    torch.testing.assert_close(responses[:, 2], cos[labels == 2].mean(0))
    fig = plots.coverage(layer, images, labels, PATTERN_NAMES)
    per_class = fig.neurons_per_class
    fired = layer.fire_count > 0
    assert int(per_class.sum()) == int(fired.sum())
    assert per_class.tolist() == torch.bincount(responses[fired].argmax(1), minlength=6).tolist()
    bars = fig.axes[1].patches
    assert [b.get_width() for b in bars] == per_class.tolist()
    ticks = fig.axes[1].get_yticklabels()
    assert [t.get_text() for t in ticks] == list(PATTERN_NAMES)
    assert [t.get_color() == "tab:red" for t in ticks] == [c == 0 for c in per_class.tolist()]
    assert f"{int((per_class > 0).sum())} of 6 classes" in fig.get_suptitle()

    conv = FpConv2d(1, 4, 3, seed=0)
    assert plots.class_responses(conv, images[:50], labels[:50]).shape == (4, 6)


def test_accuracy_vs_neurons_from_rows_or_frame_like():
    rows = [dict(method=m, size=s, readout="fired", seed=seed, probe_acc=acc)
            for m, base in (("frontprop", 0.5), ("random", 0.3))
            for s in (10, 100, 1000) for seed, acc in ((0, base + s / 10000), (1, base + s / 5000))]
    fig = plots.accuracy_vs_neurons(rows)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    lines = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert len(lines) == 2
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["frontprop / fired", "random / fired"]
    np.testing.assert_array_equal(lines[0].get_xdata(), [10, 100, 1000])
    np.testing.assert_allclose(lines[0].get_ydata(), [0.5 + 1.5 * s / 10000 for s in (10, 100, 1000)])

    class Frame:  # what accuracy_vs_neurons uses of a pandas DataFrame
        def to_dict(self, orient):
            assert orient == "records"
            return rows
    assert len(plots.accuracy_vs_neurons(Frame()).axes[0].get_legend().get_texts()) == 2
    with pytest.raises(ValueError, match="probe_acc"):
        plots.accuracy_vs_neurons([dict(size=1, acc=0.1)])


def test_learning_curves():
    runs = np.array([[0.1, 0.5, 0.7], [0.3, 0.5, 0.9]])
    fig = plots.learning_curves({"frontprop": ([100, 200, 300], runs), "probe": [0.2, 0.4]})
    ax = fig.axes[0]
    first, second = ax.get_lines()
    np.testing.assert_array_equal(first.get_xdata(), [100, 200, 300])
    np.testing.assert_allclose(first.get_ydata(), [0.2, 0.5, 0.8])
    np.testing.assert_array_equal(second.get_xdata(), [1, 2])
    assert len(ax.collections) == 1  # a min-max band for the curve with several runs
    with pytest.raises(ValueError, match="x values"):
        plots.learning_curves({"bad": ([1, 2], [0.1, 0.2, 0.3])})


def depth_summary():
    """A protocol.summary-like dict: two rules (one diverged), the baselines, backprop; 2 depths."""
    probes = {"frontprop": (0.80, 0.78), "oja": (np.nan, np.nan), "untrained": (0.79, 0.75),
              "imprint": (0.81, 0.80), "kmeans": (0.82, 0.81), "backprop": (0.85, 0.86)}
    summary = {}
    for method, values in probes.items():
        for depth, value in enumerate(values, 1):
            for stage in range(1, depth + 1):
                summary[(method, depth, stage)] = {"mean": value - 0.01 * (depth - stage), "std": 0.005, "n": 3}
    return summary


def test_probe_against_depth_draws_each_method_at_its_last_stage():
    fig = plots.probe_against_depth(depth_summary(), data=dict(dataset="digits", n_train=1000, n_test=500))
    assert plots.figure_problems(fig) == []
    ax = fig.axes[0]
    assert ax.get_title() == "digits, 1,000 / 500 images: linear probe on the last stage (3 seeds)"
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["frontprop", "oja (diverged)", "untrained (baseline)", "imprint (baseline)",
                      "kmeans (baseline)", "backprop (baseline)"]
    lines = [container.lines[0] for container in ax.containers]  # each errorbar's data line
    assert np.allclose(lines[0].get_ydata(), [80, 78])  # last stage of each depth, in %, not earlier stages
    assert [line.get_linestyle() for line in lines] == ["-", "-", "--", "--", "--", ":"]
    assert [float(t) for t in ax.get_xticks()] == [1.0, 2.0]
    colours = [matplotlib.colors.to_hex(line.get_color()) for line in lines]
    assert len(set(colours)) == len(colours), "every method needs a colour of its own"


def test_probe_against_depth_zooms_in_on_the_gain_over_the_untrained_net():
    summary = depth_summary()
    for depth, value in ((1, 0.70), (2, 0.72)):  # 9 and 3 points below untrained: left out of the zoom
        summary[("homeostatic", depth, depth)] = {"mean": value, "std": 0.01, "n": 3}
    fig = plots.probe_against_depth(summary)
    assert plots.figure_problems(fig) == []
    zoom = fig.axes[1]
    assert zoom.get_title() == "gain over the untrained net\nnot shown, more than 5 below: homeostatic"
    lines = [container.lines[0] for container in zoom.containers]
    # frontprop, imprint, kmeans, backprop (oja diverged, homeostatic left out), in points over untrained
    assert [list(np.round(line.get_ydata(), 6)) for line in lines] == [[1, 3], [2, 5], [3, 6], [6, 11]]
    colours = {t.get_text(): h.get_color() for t, h in zip(fig.legends[0].get_texts(), fig.legends[0].legend_handles)}
    assert matplotlib.colors.to_hex(lines[0].get_color()) == matplotlib.colors.to_hex(colours["frontprop"])
    assert len(plots.probe_against_depth({k: v for k, v in summary.items() if k[0] != "untrained"}).axes) == 1


def test_probe_against_depth_refuses_a_summary_without_last_stages():
    with pytest.raises(ValueError, match="last-stage"):
        plots.probe_against_depth({("frontprop", 2, 1): {"mean": 0.5, "std": 0.0}})


def test_probe_against_depth_takes_more_rules_than_colours():
    summary = {(f"rule {i}", 1, 1): {"mean": 0.5 + 0.01 * i, "std": 0.0, "n": 1} for i in range(25)}
    fig = plots.probe_against_depth(summary)
    assert len(fig.axes[0].containers) == 25 and len(fig.axes) == 1  # no untrained net: no zoom
