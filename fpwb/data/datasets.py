"""Image data sets as tensors: digits (embedded), MNIST, Fashion-MNIST, KMNIST and CIFAR-10.

``load`` returns ``(images (N, C, H, W) float32 in [0, 1], labels (N,) int64)``. The MNIST-format
sets and CIFAR-10 are read straight from their original files (``.gz`` or uncompressed IDX files,
CIFAR-10's pickled batches), so what a download left in ``root`` works offline; torchvision only
downloads. Files that are missing give a ``DatasetNotFoundError`` that says where we looked and how
to get them; files that are truncated or corrupt give a ``DatasetCorruptError``.
"""
from __future__ import annotations

import gzip
import math
import os
import pickle
import shutil
import socket
import subprocess
import tarfile
import zlib
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch

DATASETS = ("digits", "mnist", "fashion_mnist", "kmnist", "cifar10")
SPLITS = ("train", "test")

#: digits has no official split: a stratified split with this seed and test share, always the same.
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_SHARE = 0.25

# MNIST-format sets: torchvision class (and so folder under root), where the files come from.
_IDX_SETS = {
    "mnist": ("MNIST", "https://ossci-datasets.s3.amazonaws.com/mnist/"),
    "fashion_mnist": ("FashionMNIST", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
    "kmnist": ("KMNIST", "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"),
}
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_CIFAR_DIR = "cifar-10-batches-py"
_DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
_IDX_DTYPES = {0x08: np.uint8}
OFFLINE_ENV = "FPWB_OFFLINE"


class DatasetNotFoundError(FileNotFoundError):
    """The data set's files are not where ``load`` looked, and it could not download them."""


class DatasetCorruptError(ValueError):
    """A data set file exists but is truncated or not in the expected format."""


def load(name: str, split: str = "train", root="data", download=None):
    """Load one split of a data set: (images (N, C, H, W) float32 in [0, 1], labels (N,) int64).

    name: one of DATASETS. ``digits`` is scikit-learn's 8x8 digits (1797 images, shipped with
    scikit-learn, always available); it has no official split, so ``train``/``test`` are a fixed
    stratified split (DIGITS_TEST_SHARE of each class to test, seed DIGITS_SPLIT_SEED).

    The others are read from the original files under ``root``: ``root/MNIST/raw``,
    ``root/FashionMNIST/raw``, ``root/KMNIST/raw`` (torchvision's layout, ``.gz`` or uncompressed)
    or ``root/<name>``; ``root/cifar-10-batches-py`` (or ``root/cifar-10-python.tar.gz``, then
    extracted). Fashion-MNIST is also found where Debian's ``dataset-fashion-mnist`` package puts it.

    download: False never touches the network. True downloads missing files with torchvision.
    None (default) uses local files and downloads only when they are missing and the source
    server answers, unless the environment variable FPWB_OFFLINE=1 is set.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; expected one of {DATASETS}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if download not in (None, True, False):
        raise ValueError(f"download must be None, True or False, got {download!r}")
    if name == "digits":
        return _load_digits(split)
    root = Path(root)
    if name == "cifar10":
        return _load_cifar10(root, split, download)
    return _load_idx_set(name, root, split, download)


def _load_digits(split):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images / 16.0).float().unsqueeze(1)  # (1797, 1, 8, 8)
    labels = torch.from_numpy(digits.target).long()
    index = np.arange(len(labels))
    train, test = train_test_split(index, test_size=DIGITS_TEST_SHARE, stratify=digits.target,
                                   random_state=DIGITS_SPLIT_SEED)
    keep = torch.from_numpy(np.sort(train if split == "train" else test))
    return images[keep], labels[keep]


# ---------------------------------------------------------------- MNIST-format (IDX) files

def _idx_files(split):
    prefix = "train" if split == "train" else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _debian_fashion_dirs():
    """Folders holding the Debian package's Fashion-MNIST files: from ``dpkg -L``, else the known path."""
    try:
        listing = subprocess.run(["dpkg", "-L", "dataset-fashion-mnist"], capture_output=True,
                                 text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        listing = ""
    found = {Path(line).parent for line in listing.splitlines() if line.endswith("-ubyte.gz")}
    return sorted(found) or [_DEBIAN_FASHION]


def _find(folder: Path, stem: str):
    """folder/stem, else folder/stem.gz, else None."""
    for path in (folder / stem, folder / f"{stem}.gz"):
        if path.is_file():
            return path
    return None


def _load_idx_set(name, root, split, download):
    folder_name, url = _IDX_SETS[name]
    torchvision_dir = root / folder_name / "raw"
    folders = [torchvision_dir, root / name] + (_debian_fashion_dirs() if name == "fashion_mnist" else [])
    stems = _idx_files(split)

    def locate():
        for folder in folders:
            paths = [_find(folder, stem) for stem in stems]
            if all(paths):
                return paths
        return None

    paths = locate()
    if paths is None:
        why = _download(name, root, split, download, url)
        paths = locate()
        if paths is None:
            raise DatasetNotFoundError(
                f"{name} ({split} split) not found. Looked for {stems[0]}[.gz] and {stems[1]}[.gz] in:\n"
                + "".join(f"  {folder}\n" for folder in folders)
                + f"{why}\nTo get them: call fpwb.data.load({name!r}, download=True, root={str(root)!r}) "
                f"on a machine with network access, or copy the four files from {url} (.gz or "
                f"uncompressed) into {torchvision_dir}/"
                + (", or install Debian's dataset-fashion-mnist package" if name == "fashion_mnist" else ""))
    images = read_idx(paths[0])
    labels = read_idx(paths[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetCorruptError(f"{paths[0]} and {paths[1]} do not match: images "
                                  f"{images.shape}, labels {labels.shape}")
    return (torch.from_numpy(images).float().div_(255).unsqueeze(1),  # (N, 1, 28, 28)
            torch.from_numpy(labels.astype(np.int64)))


def read_idx(path) -> np.ndarray:
    """An IDX file (``.gz`` or uncompressed) as a uint8 array, checked against its own header."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
        raise DatasetCorruptError(f"{path} is truncated or corrupt ({err}); delete it and get it "
                                  f"again") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
        raise DatasetCorruptError(f"{path} is not an IDX file of unsigned bytes (header "
                                  f"{raw[:4].hex() or 'empty'}); delete it and get it again")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetCorruptError(f"{path} is truncated: its header alone needs {header} bytes, "
                                  f"it holds {len(raw)}")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + math.prod(shape)  # exact: np.prod wraps around past 2**63
    if len(raw) != expected:
        raise DatasetCorruptError(f"{path} is truncated or corrupt: its header says shape {shape}, "
                                  f"{expected} bytes, the file holds {len(raw)}; delete it and get "
                                  f"it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()  # writable


# ---------------------------------------------------------------- CIFAR-10

def _load_cifar10(root, split, download):
    folder = root / _CIFAR_DIR
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    archive = root / "cifar-10-python.tar.gz"

    def present():
        return all((folder / n).is_file() for n in names)

    if not present() and archive.is_file():
        _extract(archive, root)
    why = None if present() else _download("cifar10", root, split, download, _CIFAR_URL)
    if not present():
        raise DatasetNotFoundError(
            f"cifar10 ({split} split) not found. Looked for {', '.join(names)} in {folder}/ and for "
            f"{archive}.\n{why}\nTo get them: call fpwb.data.load('cifar10', download=True, "
            f"root={str(root)!r}) on a machine with network access, or put {_CIFAR_URL} into "
            f"{root}/ (it is extracted on first use)")
    images, labels = [], []
    for n in names:
        data, targets = _read_cifar_batch(folder / n)
        images.append(data)
        labels.append(targets)
    images = torch.from_numpy(np.concatenate(images)).float().div_(255)
    return images.view(-1, 3, 32, 32), torch.from_numpy(np.concatenate(labels))


def _extract(archive, root):
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(root, filter="data")
    except (OSError, EOFError, tarfile.TarError, zlib.error) as err:
        shutil.rmtree(root / _CIFAR_DIR, ignore_errors=True)
        raise DatasetCorruptError(f"{archive} is truncated or corrupt ({err}); delete it and get it "
                                  f"again") from None


def _read_cifar_batch(path):
    """One pickled CIFAR-10 batch: (data (10000, 3072) uint8, labels (10000,) int64)."""
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as err:
        raise DatasetCorruptError(f"{path} is truncated or not a CIFAR-10 batch ({err!r}); delete "
                                  f"it and get it again") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DatasetCorruptError(f"{path} holds data {data.shape} and {len(labels)} labels; "
                                  f"expected (n, 3072) and n labels")
    return data, labels


# ---------------------------------------------------------------- downloading

def _network_available(url: str, timeout: float = 3.0) -> bool:
    """Whether the server of url accepts a TCP connection within timeout seconds."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _download(name, root, split, download, url) -> str:
    """Download with torchvision when allowed; returns a sentence saying why files may still be missing."""
    if download is False:
        return "Not downloading: download=False."
    if download is None and os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        return f"Not downloading: {OFFLINE_ENV} is set."
    if download is None and not _network_available(url):
        return f"Not downloading: {urlparse(url).hostname} cannot be reached (offline?)."
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else getattr(datasets, _IDX_SETS[name][0])
    try:
        cls(str(root), train=split == "train", download=True)
    except Exception as err:  # urllib, checksum and extraction errors: reported in one line
        return f"Download failed: {type(err).__name__}: {err}"
    return "Downloaded, yet the files are not there."
