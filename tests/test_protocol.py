"""The shared protocol: fit (seeded order, learned share), probe (named readout), the data choice,
the annotated heat map and the figure check."""
import numpy as np
import pytest
import torch
from matplotlib.colors import LogNorm

import fpwb
from fpwb.data import Batches, choose_dataset, train_test
from fpwb.evaluation import diagnostics, protocol
from fpwb.evaluation.probes import embed, linear_probe
from fpwb.viz import plots


def _data(n=300, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, d, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return (centres[y] + 0.3 * torch.randn(n, d, generator=g)).clamp_min(0), y


def test_fit_is_the_seeded_batches_loop():
    X, _ = _data()
    by_hand = fpwb.FpLinear(16, 8, t_decay=0.01, seed=3)
    for xb, _ in Batches(X, torch.zeros(len(X), dtype=torch.long), batch_size=64, seed=5, epochs=2):
        by_hand(xb)
    trained = protocol.fit(fpwb.FpLinear(16, 8, t_decay=0.01, seed=3), X, epochs=2, seed=5,
                           batch_size=64, progress=False)
    assert torch.equal(trained.model.weight, by_hand.weight)
    assert torch.equal(trained.model.threshold, by_hand.threshold)
    assert trained.model.frozen and trained.seconds >= 0
    assert torch.equal(trained.initial_weight, fpwb.FpLinear(16, 8, seed=3).weight)
    assert trained.learned_share == diagnostics.learned_share(trained.model, trained.initial_weight)
    assert 0 < trained.learned_share <= 1


def test_fit_other_seed_other_order_and_untrained_layer_learns_nothing():
    X, _ = _data()
    a = protocol.fit(fpwb.FpLinear(16, 8, t_decay=0.01, seed=3), X, seed=0, progress=False).model
    b = protocol.fit(fpwb.FpLinear(16, 8, t_decay=0.01, seed=3), X, seed=1, progress=False).model
    assert not torch.equal(a.weight, b.weight)
    silent = protocol.fit(fpwb.FpLinear(16, 8, t_decay=1e-9, seed=3), X[:5], progress=False)
    assert silent.learned_share == 0.0  # thresholds at 1 never decay: nobody fires


def test_fit_flattens_images_and_trains_conv():
    images = torch.rand(40, 1, 6, 6)
    assert protocol.fit(fpwb.FpLinear(36, 4, seed=0), images, progress=False).model.samples_seen == 40
    conv = protocol.fit(fpwb.FpConv2d(1, 3, 3, t_decay=0.05, seed=0), images, progress=False)
    assert conv.model.samples_seen == 40 and conv.initial_weight.shape == (3, 1, 3, 3)


def test_fit_refuses_what_it_cannot_train():
    with pytest.raises(ValueError, match="FpLinear or FpConv2d"):
        protocol.fit(torch.nn.Linear(3, 2), torch.rand(4, 3))
    with pytest.raises(ValueError, match="non-empty"):
        protocol.fit(fpwb.FpLinear(3, 2), torch.rand(0, 3))


def test_probe_names_its_readout_and_matches_linear_probe():
    X, y = _data()
    layer = protocol.fit(fpwb.FpLinear(16, 8, t_decay=0.01, seed=0), X[:200], progress=False).model
    for readout in ("relu", "fired", "topk", "linear"):
        result = protocol.probe(layer, X[:200], y[:200], X[200:], y[200:], readout=readout)
        expected = linear_probe(embed(layer, X[:200], readout=readout), y[:200],
                                embed(layer, X[200:], readout=readout), y[200:])
        assert result["readout"] == readout and result["features"] == 8
        assert result["accuracy"] == expected["accuracy"]
    assert protocol.probe(layer, X[:200], y[:200], X[200:], y[200:])["readout"] == protocol.PROBE_READOUT
    pixels = protocol.probe(None, X[:200], y[:200], X[200:], y[200:], readout="pixels")
    assert pixels["features"] == 16 and pixels["readout"] == "pixels"
    with pytest.raises(ValueError, match="readout must be one of"):
        protocol.probe(layer, X, y, X, y, readout="relux")
    with pytest.raises(ValueError, match="model=None"):
        protocol.features(layer, X, "pixels")
    staged = protocol.probe_features(X[:200], y[:200], X[200:], y[200:], readout="stage 2")
    assert staged["readout"] == "stage 2" and staged["accuracy"] == pixels["accuracy"]


def test_choose_dataset_falls_back(tmp_path, capsys, monkeypatch):
    assert choose_dataset("digits") == "digits"
    monkeypatch.setattr("fpwb.data.datasets._debian_fashion_dirs", lambda: [tmp_path / "none"])
    assert choose_dataset("fashion_mnist", root=tmp_path) == "digits"
    assert "using digits" in capsys.readouterr().out
    X_train, y_train, X_test, y_test = train_test("digits", max_train=50, max_test=20)
    assert X_train.shape == (50, 1, 8, 8) and len(y_test) == 20
    with pytest.raises(ValueError, match="max_train"):
        train_test("digits", max_train=0)


def test_heatmap_has_colour_bar_readable_text_and_refuses_bad_labels():
    values = np.array([[0.1, 0.9], [0.5, np.nan]])
    fig = plots.heatmap(values, rows=["a", "b"], columns=["x", "y"], xlabel="column", ylabel="row",
                        title="grid", colorbar_label="accuracy", vmin=0, vmax=1)
    assert plots.figure_problems(fig) == []
    ax, bar = fig.axes
    texts = {t.get_text(): t for t in ax.texts}
    assert set(texts) == {"0.10", "0.90", "0.50"}  # NaN left blank
    assert all(t.get_fontsize() > 7 for t in texts.values())
    assert texts["0.10"].get_color() == "white" and texts["0.90"].get_color() == "black"  # viridis
    assert bar.get_ylabel() == "accuracy"
    logged = plots.heatmap([[1, 100]], rows=["r"], columns=["a", "b"], xlabel="x", ylabel="y",
                           title="t", colorbar_label="pairs", norm=LogNorm(1, 100), fmt="{:.0f}")
    assert [t.get_text() for t in logged.axes[0].texts] == ["1", "100"]
    with pytest.raises(ValueError, match="row and"):
        plots.heatmap(values, rows=["a"], columns=["x", "y"], xlabel="", ylabel="", title="")


def test_figure_problems_reads_titles_and_labels():
    from matplotlib.figure import Figure

    fig = Figure()
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot([1, 2])
    bottom.plot([1, 2])
    bottom.set_xlabel("samples")
    assert plots.figure_problems(fig) == ["no title", "axes 0: y axis without a label",
                                          "axes 1: y axis without a label"]
    top.set_ylabel("a")
    bottom.set_ylabel("b")
    fig.suptitle("two panels")
    assert plots.figure_problems(fig) == []  # the shared x axis needs its label once
    im = top.imshow([[0, 1]])
    fig.colorbar(im, ax=top)
    assert plots.figure_problems(fig) == ["axes 2: colour bar without a label"]
