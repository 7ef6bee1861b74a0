"""Classification data: CIFAR-100 python-format loader on a tiny written file, the idx reader and
Fashion-MNIST loader on tiny written files (and the Debian package when installed), the 10% holdout."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from agekit.data.classification import (
    FASHION_MNIST_DIR,
    ClassificationDataset,
    build_classification_augment,
    holdout_split,
    load_cifar100,
    load_classification,
    load_fashion_mnist,
    read_idx,
)


def write_tiny_cifar100(root: Path, n_train: int = 40, n_test: int = 20, seed: int = 0) -> Path:
    """The official cifar-100-python layout: ``train``/``test``/``meta`` pickles (protocol 2, bytes keys)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = [int(i % 100) for i in range(n)]
        data = np.zeros((n, 3072), np.uint8)
        for i, lab in enumerate(labels):  # a class-dependent colour so a model can learn something
            data[i, :1024], data[i, 1024:2048], data[i, 2048:] = lab * 2, 255 - lab * 2, (lab * 37) % 256
        data = np.clip(data.astype(int) + rng.integers(-20, 20, data.shape), 0, 255).astype(np.uint8)
        d = {b"filenames": [f"img_{i}.png".encode() for i in range(n)], b"batch_label": split.encode(),
             b"fine_labels": labels, b"coarse_labels": [lab // 5 for lab in labels], b"data": data}
        with open(root / split, "wb") as f:
            pickle.dump(d, f, protocol=2)
    with open(root / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"class{i}".encode() for i in range(100)],
                     b"coarse_label_names": [f"super{i}".encode() for i in range(20)]}, f, protocol=2)
    return root


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_cifar100_loader_on_tiny_official_format(tmp_path):
    root = write_tiny_cifar100(tmp_path / "cifar-100-python")
    d = load_cifar100(root)
    assert d.train_x.shape == (40, 32, 32, 3) and d.test_x.shape == (20, 32, 32, 3) and d.train_x.dtype == np.uint8
    assert d.num_classes == 100 and d.classes[3] == "class3"
    assert d.train_y.tolist()[:5] == [0, 1, 2, 3, 4]
    with open(root / "train", "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"]
    # rows are the R plane, then G, then B (each 32x32 row-major)
    assert np.array_equal(d.train_x[7, :, :, 0].ravel(), raw[7, :1024])
    assert np.array_equal(d.train_x[7, :, :, 2].ravel(), raw[7, 2048:])


def test_cifar_loader_refuses_code_in_pickles(tmp_path):
    root = write_tiny_cifar100(tmp_path / "c")
    with open(root / "train", "wb") as f:
        pickle.dump({"data": print}, f)  # a pickle that would call a function
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_cifar100(root)
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        load_cifar100(tmp_path / "missing")


def test_idx_reader_and_fashion_mnist_loader(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (6, 28, 28)).astype(np.uint8)
    labels = np.array([0, 1, 2, 3, 4, 9], np.uint8)
    for kind in ("train", "t10k"):
        _write_idx(tmp_path / f"{kind}-images-idx3-ubyte.gz", imgs)
        _write_idx(tmp_path / f"{kind}-labels-idx1-ubyte.gz", labels)
    assert np.array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), imgs)
    d = load_fashion_mnist(tmp_path)
    assert d.train_x.shape == (6, 32, 32) and d.num_classes == 10 and d.train_y.tolist() == labels.tolist()
    ds = ClassificationDataset(d.train_x, d.train_y, np.arange(6), 32)
    x, y = ds[2]
    assert x.shape == (3, 32, 32) and x.dtype == torch.uint8 and y == 2
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])  # grey copied to 3 channels
    big = ClassificationDataset(d.train_x, d.train_y, np.arange(6), 64, build_classification_augment(64))
    assert big[0][0].shape == (3, 64, 64)
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nope")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04"))
    with pytest.raises(ValueError, match="not an idx"):
        read_idx(tmp_path / "bad.gz")


@pytest.mark.skipif(not Path(FASHION_MNIST_DIR).is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_package():
    d = load_classification("fashion_mnist", None)
    assert d.train_x.shape == (60000, 32, 32) and d.test_x.shape == (10000, 32, 32)
    assert np.bincount(d.train_y).tolist() == [6000] * 10


def test_holdout_is_deterministic_stratified_ten_percent():
    labels = np.repeat(np.arange(10), 50)
    tr, va = holdout_split(labels)
    tr2, va2 = holdout_split(labels)
    assert np.array_equal(va, va2) and np.array_equal(tr, tr2)
    assert len(va) == 50 and len(tr) == 450 and not set(tr) & set(va)
    assert np.bincount(labels[va]).tolist() == [5] * 10
    assert not np.array_equal(holdout_split(labels, seed=1)[1], va)


def test_holdout_gives_val_images_even_with_one_image_per_class():
    labels = np.arange(40) % 100  # 40 images, one per class: floor(0.1) = 0 per class
    tr, va = holdout_split(labels)
    assert len(va) == 4 and len(tr) == 36
