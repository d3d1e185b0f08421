import matplotlib

matplotlib.use("Agg")

import base64  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from fpwb.data import PATTERN_NAMES, SIMPLE_PATTERNS  # noqa: E402
from fpwb.runs import experiments  # noqa: E402
from fpwb.viz import plots  # noqa: E402
from fpwb.viz.explorer import Explorer  # noqa: E402


@pytest.fixture
def explorer():
    ex = Explorer(n_neurons=6, batch_size=40, t_decay=0.05, seed=0, interval=0.0)
    yield ex
    ex.close()


def mosaic(ex):
    return np.ma.getdata(ex.weight_image.get_array()).copy()


def test_builds_widgets_layer_and_figure(explorer):
    ex = explorer
    assert ex.layer.in_features == 49 and ex.layer.out_features == 6
    assert [s.description for s in ex.prob_sliders] == [f"p({n})" for n in PATTERN_NAMES]
    assert ex.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(ex.threshold_lines) == 6
    assert mosaic(ex).shape == (2 * 8 - 1, 3 * 8 - 1)
    assert "samples_seen=0" in repr(ex) and "neurons=6" in repr(ex)
    assert "text/plain" in ex._repr_mimebundle_()


def test_step_button_learns_and_updates_the_figure_in_place(explorer):
    ex = explorer
    figure, image, lines = ex.figure, ex.weight_image, list(ex.threshold_lines)
    weight, png, before = ex.layer.weight.clone(), ex.image.value, mosaic(ex)
    for _ in range(3):
        ex.step_button.click()
    assert int(ex.layer.samples_seen) == 120
    assert not torch.equal(ex.layer.weight, weight)
    assert ex.figure is figure and ex.weight_image is image and ex.threshold_lines == lines
    after = mosaic(ex)
    assert not np.allclose(np.nan_to_num(after), np.nan_to_num(before))
    np.testing.assert_allclose(after[:7, :7], ex.layer.weight[0].view(7, 7).numpy(), rtol=1e-6)
    x, y = lines[3].get_data()
    np.testing.assert_array_equal(x, [0, 40, 80, 120])
    assert y[-1] == pytest.approx(float(ex.layer.threshold[3]))
    assert ex.image.value != png
    assert "samples seen 120" in ex.status.value


def test_hyperparameter_sliders_set_the_live_layer(explorer):
    ex = explorer
    layer = ex.layer
    ex.step()
    ex.w_boost_slider.value = 0.2
    ex.t_decay_slider.value = 0.001
    assert ex.layer is layer  # not rebuilt
    assert layer.w_boost == pytest.approx(0.2) and layer.t_decay == pytest.approx(0.001)
    assert int(layer.samples_seen) == 40


def test_neurons_slider_rebuilds_the_layer_and_its_artists_only(explorer):
    ex = explorer
    ex.step()
    figure, layer = ex.figure, ex.layer
    ex.neurons_slider.value = 10
    assert ex.layer is not layer and ex.layer.out_features == 10
    assert int(ex.layer.samples_seen) == 0
    assert ex.figure is figure and not ex.running
    assert len(ex.threshold_lines) == 10
    assert len(ex._threshold_ax.get_lines()) == 10  # old lines are gone
    assert len(ex._weight_ax.get_images()) == 1
    assert mosaic(ex).shape == (3 * 8 - 1, 4 * 8 - 1)
    ex.run()
    ex.neurons_slider.value = 4  # while running: rebuilt, and the run goes on
    assert ex.layer.out_features == 4 and ex.running
    ex.pause()


def test_probability_and_noise_sliders_change_the_stream_not_the_layer(explorer):
    ex = explorer
    layer = ex.layer
    for i, slider in enumerate(ex.prob_sliders):
        slider.value = 1.0 if i == 2 else 0.0
    ex.noise_slider.value = 0.0
    assert ex.layer is layer
    images, labels = ex.draw(30)
    assert bool((labels == 2).all())
    assert torch.equal(images, SIMPLE_PATTERNS[2].expand(30, 1, 7, 7))
    ex.step()
    assert int(layer.samples_seen) == 40
    for slider in ex.prob_sliders:
        slider.value = 0.0
    with pytest.raises(ValueError, match="probability"):
        ex.step()
    ex.step_button.click()  # from the panel, the error shows in the status line
    assert "probability" in ex.status.value and int(layer.samples_seen) == 40


def test_run_pause_and_reset_buttons(explorer):
    ex = explorer
    ex.run_button.click()
    deadline = time.monotonic() + 20
    while int(ex.layer.samples_seen) < 120 and time.monotonic() < deadline:
        time.sleep(0.02)
    ex.pause_button.click()
    assert not ex.running
    seen = int(ex.layer.samples_seen)
    assert seen >= 120 and seen % 40 == 0
    time.sleep(0.1)
    assert int(ex.layer.samples_seen) == seen  # stopped
    assert len(ex.threshold_lines[0].get_xdata()) == seen // 40 + 1

    layer = ex.layer
    ex.reset_button.click()
    assert ex.layer is not layer and int(ex.layer.samples_seen) == 0
    assert torch.equal(ex.layer.weight, Explorer(n_neurons=6, seed=0).layer.weight)  # same seed
    np.testing.assert_array_equal(ex.threshold_lines[0].get_xdata(), [0])


def test_errors_in_the_run_thread_stop_it_and_show_in_the_panel(explorer):
    ex = explorer
    for slider in ex.prob_sliders:
        slider.value = 0.0
    ex.run()
    deadline = time.monotonic() + 10
    while ex.running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not ex.running
    assert "stopped" in ex.status.value and "probability" in ex.status.value


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))])
def test_layer_and_data_on_the_device_and_the_same_stream(device):
    ex = Explorer("patterns", n_neurons=4, batch_size=8, noise=0.1, seed=3, device=device)
    assert ex.layer.weight.device.type == device and "device=" in repr(ex)
    images, labels = ex.draw(8)
    assert images.device.type == device and labels.device.type == "cpu"
    ex.step()
    assert int(ex.layer.samples_seen) == 8
    ex.close()
    reference = Explorer("patterns", n_neurons=4, batch_size=8, noise=0.1, seed=3)
    assert torch.allclose(images.cpu(), reference.draw(8)[0])  # the seed, not the device, sets the stream
    reference.close()


def test_custom_image_data_and_argument_checks():
    images = torch.rand(20, 3, 4, 4)
    labels = torch.arange(20) % 2
    ex = Explorer((images, labels), n_neurons=3, batch_size=10)
    assert ex.layer.in_features == 48 and len(ex.prob_sliders) == 2
    ex.step()
    assert mosaic(ex).shape == (2 * 5 - 1, 2 * 5 - 1, 3)  # RGB tiles
    ex.close()
    with pytest.raises(ValueError, match="probs"):
        Explorer(probs=(1, 2))
    with pytest.raises(ValueError, match="data"):
        Explorer(data=42)


def test_status_says_running_then_paused_without_html_entities(explorer):
    ex = explorer
    assert ex.status.value.endswith("· paused") and "&" not in ex.status.value
    ex.run()
    assert ex.status.value.endswith("· running")
    ex.pause_button.click()
    assert ex.status.value.endswith("· paused") and "running" not in ex.status.value


def test_threshold_plot_before_the_first_step_shows_the_start(explorer):
    ex = explorer
    x, y = ex.threshold_lines[0].get_data()
    np.testing.assert_array_equal(x, [0])
    np.testing.assert_array_equal(y, [1.0])
    assert ex.threshold_lines[0].get_marker() == "o"  # a single point still shows
    low, high = ex._threshold_ax.get_ylim()
    assert low <= 0.0 and high >= 1.0
    left, right = ex._threshold_ax.get_xlim()
    assert left < 0 < ex.batch_size <= right
    assert ex._threshold_ax.get_title() and ex._threshold_ax.get_xlabel() and ex._threshold_ax.get_ylabel()
    assert ex._colorbar_ax.get_visible() and ex._colorbar_ax.get_ylabel() == "weight"
    assert plots.figure_problems(ex.figure) == []
    ex.step()
    ex.neurons_slider.value = 9  # new artists, a new colour bar in the same place
    assert plots.figure_problems(ex.figure) == [] and len(ex.figure.axes) == 3


def test_headless_outside_a_kernel_and_the_display_is_a_snapshot(explorer, monkeypatch):
    from fpwb.viz import explorer as module

    assert module.headless()  # pytest: no IPython kernel
    bundle = explorer._repr_mimebundle_()
    assert set(bundle) == {"image/png", "text/plain"}
    assert base64.b64decode(bundle["image/png"]) == explorer.image.value
    monkeypatch.setattr(module, "headless", lambda: False)
    assert "application/vnd.jupyter.widget-view+json" in explorer._repr_mimebundle_()


def test_headless_in_a_kernel_depends_on_the_front_end(monkeypatch):
    import IPython

    from fpwb.viz import explorer as module

    class Kernel:
        request = {"header": {"msg_type": "execute_request"}, "metadata": {}}

        def get_parent(self):
            return self.request

    class Shell:
        kernel = Kernel()

    monkeypatch.setattr(IPython, "get_ipython", lambda: Shell())
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.delenv(module.RUNNER_ENV, raising=False)
    assert module.headless()  # papermill / nbval: a kernel, bare execute requests
    monkeypatch.setenv("JPY_SESSION_NAME", "notebooks/04_explorer.ipynb")
    assert not module.headless()  # a kernel JupyterLab started for a notebook
    monkeypatch.delenv("JPY_SESSION_NAME")
    Shell.kernel.request = {**Kernel.request, "metadata": {"cellId": "cell-03", "deletedCells": []}}
    assert not module.headless()  # a cell JupyterLab runs in a kernel it did not start
    monkeypatch.setenv("JPY_SESSION_NAME", "notebooks/04_explorer.ipynb")
    monkeypatch.setenv(experiments.RUNNER_ENV, "report")
    assert module.RUNNER_ENV == experiments.RUNNER_ENV
    assert module.headless()  # fpwb report, even started from a JupyterLab kernel


def test_pause_after_an_error_keeps_the_error_in_the_status(explorer):
    ex = explorer
    for slider in ex.prob_sliders:
        slider.value = 0.0
    ex.run_button.click()
    deadline = time.monotonic() + 10
    while ex.running and time.monotonic() < deadline:
        time.sleep(0.02)
    ex.pause_button.click()
    assert "stopped" in ex.status.value and "probability" in ex.status.value
