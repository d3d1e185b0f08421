"""fpwb.data: data sets from their files (digits, tiny MNIST-format files written here), streams, tasks."""
import gzip

import numpy as np
import pytest
import torch

from fpwb.data import (Batches, DatasetCorruptError, DatasetNotFoundError, class_incremental, flatten,
                       load, permuted_tasks, read_idx)


def write_idx(path, array, compress):
    """An IDX file of unsigned bytes, as the MNIST files are."""
    array = np.asarray(array, dtype=np.uint8)
    data = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes() + array.tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def write_mnist(folder, compress, n=(12, 5), seed=0):
    """Tiny train/test splits in MNIST's file names; returns the arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {}
    for prefix, count in zip(("train", "t10k"), n):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[0, 0, 1] = 0, 255  # the full range, to check the scaling
        labels = rng.integers(0, 10, size=count, dtype=np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, compress)
        written[prefix] = images, labels
    return written


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test may reach the network: download=None must not even try."""
    monkeypatch.setenv("FPWB_OFFLINE", "1")


def test_digits_split_is_fixed_stratified_and_in_range():
    X, y = load("digits", "train")
    Xt, yt = load("digits", "test")
    assert X.shape == (1347, 1, 8, 8) and Xt.shape == (450, 1, 8, 8)
    assert X.dtype == torch.float32 and y.dtype == torch.int64
    assert float(X.min()) == 0.0 and float(X.max()) == 1.0
    assert torch.equal(load("digits", "train")[0], X)  # same split every time
    train_share = torch.bincount(y) / len(y)
    test_share = torch.bincount(yt) / len(yt)
    assert (train_share - test_share).abs().max() < 0.01  # stratified
    assert len(torch.cat([X, Xt]).flatten(1).unique(dim=0)) >= 1700  # disjoint, not duplicated


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_format_files_load_gz_or_raw(tmp_path, compress):
    written = write_mnist(tmp_path / "MNIST" / "raw", compress)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        X, y = load("mnist", split, root=tmp_path, download=False)
        images, labels = written[prefix]
        assert X.shape == (len(images), 1, 28, 28) and X.dtype == torch.float32
        assert y.dtype == torch.int64 and torch.equal(y, torch.from_numpy(labels.astype(np.int64)))
        assert float(X.min()) == 0.0 and float(X.max()) == 1.0
        assert torch.allclose(X[:, 0] * 255, torch.from_numpy(images).float())


def test_files_in_a_folder_named_after_the_set_are_found(tmp_path):
    write_mnist(tmp_path / "kmnist", compress=True)
    X, _ = load("kmnist", "test", root=tmp_path, download=False)
    assert X.shape == (5, 1, 28, 28)


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("kmnist", "KMNIST"), ("cifar10", "cifar-10")])
def test_missing_set_says_where_it_looked_and_how_to_get_it(tmp_path, name, folder):
    for download in (None, False):
        with pytest.raises(DatasetNotFoundError) as err:
            load(name, root=tmp_path / "nowhere", download=download)
        message = str(err.value)
        assert "not found" in message and folder in message and "download=True" in message
        assert "Not downloading" in message


def test_truncated_and_corrupt_files_give_clear_errors(tmp_path):
    written = write_mnist(tmp_path / "MNIST" / "raw", compress=False)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetCorruptError, match="truncated or corrupt"):
        load("mnist", root=tmp_path, download=False)
    path.write_bytes(b"not an idx file at all")
    with pytest.raises(DatasetCorruptError, match="not an IDX file"):
        load("mnist", root=tmp_path, download=False)
    gz = write_idx(tmp_path / "cut", written["train"][0], compress=True)
    gz.write_bytes(gz.read_bytes()[:200])
    with pytest.raises(DatasetCorruptError, match="truncated or corrupt"):
        read_idx(gz)


@pytest.mark.parametrize("shape", [(2**16,) * 4, (2**32 - 1, 2**32 - 1, 2**32 - 1)])
def test_header_whose_size_overflows_is_corrupt_naming_the_file(tmp_path, shape):
    # 2**64 bytes wrap to 0 in int64 arithmetic, so a file holding only its header "matched"
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, len(shape)]) + np.array(shape, dtype=">u4").tobytes())
    with pytest.raises(DatasetCorruptError, match=f"{path}.*header says shape"):
        read_idx(path)


def test_fashion_mnist_from_debian_package_when_installed():
    try:
        X, y = load("fashion_mnist", "test", root="/nonexistent", download=False)
    except DatasetNotFoundError as err:
        assert "dataset-fashion-mnist" in str(err)
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    assert X.shape == (10000, 1, 28, 28) and torch.equal(torch.bincount(y), torch.full((10,), 1000))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown data set"):
        load("imagenet")
    with pytest.raises(ValueError, match="split"):
        load("digits", "validation")


def test_batches_are_seeded_and_cover_every_sample_once_per_epoch():
    X, y = torch.arange(10).float().view(10, 1), torch.arange(10)
    stream = Batches(X, y, batch_size=4, seed=3, epochs=2)
    batches = list(stream)
    assert len(stream) == len(batches) == 6 and [len(b[1]) for b in batches] == [4, 4, 2] * 2
    first, second = torch.cat([b[1] for b in batches[:3]]), torch.cat([b[1] for b in batches[3:]])
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(10))
    assert not torch.equal(first, second)  # a new order each epoch
    assert all(torch.equal(b[0][:, 0].long(), b[1]) for b in batches)  # samples keep their labels
    again = [b[1] for b in Batches(X, y, batch_size=4, seed=3, epochs=2)]
    assert all(torch.equal(a, b[1]) for a, b in zip(again, batches))
    other = torch.cat([b[1] for b in Batches(X, y, batch_size=4, seed=4)])
    assert not torch.equal(other, first)
    assert len(Batches(X, y, batch_size=4, drop_last=True)) == 2
    in_order = torch.cat([b[1] for b in Batches(X, y, batch_size=3, shuffle=False)])
    assert torch.equal(in_order, y)


def test_class_incremental_splits():
    X, y = load("digits", "train")
    first, second = class_incremental(X, y, 2)
    assert first.classes == (0, 1, 2, 3, 4) and second.classes == (5, 6, 7, 8, 9)
    assert first.name == "classes 0-4" and set(second.y.tolist()) == set(range(5, 10))
    assert len(first.y) + len(second.y) == len(y)
    assert torch.equal(first.X, X[y < 5])
    custom = class_incremental(X, y, [(1, 7), (3,)])
    assert [t.classes for t in custom] == [(1, 7), (3,)] and set(custom[0].y.tolist()) == {1, 7}
    with pytest.raises(ValueError, match="distinct"):
        class_incremental(X, y, [(1, 2), (2, 3)])
    with pytest.raises(ValueError, match="no samples"):
        class_incremental(X, y, [(1, 12)])


def test_permuted_tasks_match_across_splits():
    X, y = load("digits", "train")
    Xt, yt = load("digits", "test")
    tasks = permuted_tasks(X, y, 3, seed=1)
    test_tasks = permuted_tasks(Xt, yt, 3, seed=1)
    assert torch.equal(tasks[0].X, X)  # task 0: the original images
    for task, test_task in zip(tasks, test_tasks):
        assert torch.equal(task.permutation, test_task.permutation)
        assert task.X.shape == X.shape and torch.equal(task.y, y)
        assert torch.equal(flatten(task.X), flatten(X)[:, task.permutation])
    assert not torch.equal(tasks[1].permutation, tasks[2].permutation)
