import math

import pytest
import torch

from fpwb.studies import continual
from fpwb.data import Task, class_incremental, permuted_tasks


def blobs(n, seed=0):
    """Four classes, each near its own corner of a 16-d cube, as (n, 1, 4, 4) images."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    centres = torch.zeros(4, 16)
    for c in range(4):
        centres[c, 4 * c:4 * c + 4] = 1
    X = centres[y] + 0.3 * torch.rand(n, 16, generator=g)
    return X.view(n, 1, 4, 4), y


def test_forgetting_by_hand():
    A = torch.tensor([[0.9, 0.1, 0.2],
                      [0.7, 0.8, 0.3],
                      [0.6, 0.5, 0.9]])
    f = continual.forgetting(A)
    assert f["average_accuracy"].tolist() == pytest.approx([0.9, 0.75, 2.0 / 3])
    assert f["forgetting"][1, 0] == pytest.approx(0.2)
    assert f["forgetting"][2, 0] == pytest.approx(0.3)  # best 0.9 then, 0.6 now
    assert f["forgetting"][2, 1] == pytest.approx(0.3)
    assert math.isnan(f["forgetting"][0, 0]) and math.isnan(f["average_forgetting"][0])
    assert f["final_forgetting"] == pytest.approx(0.3)
    assert f["backward_transfer"] == pytest.approx(((0.6 - 0.9) + (0.5 - 0.8)) / 2)
    with pytest.raises(ValueError):
        continual.forgetting(torch.zeros(2, 3))


@pytest.mark.parametrize("make", [
    lambda: continual.FrontpropLearner(16, 12, w_boost=0.05, t_decay=0.01),
    lambda: continual.KMeansLearner(8, batch_size=16),
    lambda: continual.AutoencoderLearner(16, 8, epochs=2),
], ids=["frontprop", "kmeans", "autoencoder"])
def test_accuracy_matrix_on_a_task_sequence(make):
    Xtr, ytr = blobs(240)
    Xte, yte = blobs(80, seed=1)
    train, test = class_incremental(Xtr, ytr, 2), class_incremental(Xte, yte, 2)
    assert [t.classes for t in train] == [(0, 1), (2, 3)]
    out = continual.accuracy_matrix(make(), train, test)
    assert out["matrix"].shape == (2, 2) and out["names"] == ["classes 0-1", "classes 2-3"]
    assert (out["matrix"] >= 0.9).all()  # separable blobs: every probe gets them
    assert out["seen"][1] >= 0.9  # one probe over the four classes
    assert out["seconds_learning"] > 0


def test_adaptation_after_a_permutation():
    Xtr, ytr = blobs(400)
    Xte, yte = blobs(80, seed=1)
    train, test = permuted_tasks(Xtr, ytr, 2, seed=3), permuted_tasks(Xte, yte, 2, seed=3)
    learner = continual.FrontpropLearner(16, 12, w_boost=0.05, t_decay=0.01)
    curve = continual.adaptation_curve(learner, train[0], train[1], test[0], test[1], slice_size=100)
    assert curve["samples"] == [0, 100, 200, 300, 400]
    assert len(curve["new"]) == len(curve["old"]) == 5 and len(curve["silent"]) == 4
    assert curve["new_final"] >= 0.9
    # right after the shift some inputs find no neuron; later, the layer has neurons for them
    assert curve["silent"][-1] <= curve["silent"][0]


def test_kmeans_first_task_must_hold_enough_samples():
    learner = continual.KMeansLearner(8)
    with pytest.raises(ValueError, match="at least 8"):
        learner.learn(torch.rand(4, 16))
