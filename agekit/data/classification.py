"""Image classification data for the attention paper: Fashion-MNIST and CIFAR-100, as uint8 arrays.

* Fashion-MNIST comes from the Debian package ``dataset-fashion-mnist`` (idx files, gzip'd, in
  ``/usr/share/datasets/fashion-mnist``): 28x28 grey, resized to 32x32; the dataset copies the grey
  channel to 3 channels per item (storing one channel keeps 70k images at 72 MB instead of 215 MB).
* CIFAR-100 reads the official python-version folder (``train``, ``test``, ``meta`` pickles; fine labels).

The validation set is a deterministic, class-stratified 10% of train (fixed seed, the same for every
training seed), so runs with different seeds are selected on the same images. Test is the official test set.
"""
from __future__ import annotations

import gzip
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from ..config.roots import FASHION_MNIST_DIR, dataset_root  # FASHION_MNIST_DIR: the Debian location

__all__ = [
    "CLASSIFICATION_DATASETS",
    "ClassificationDataModule",
    "SPLIT_SEED",
    "VAL_FRACTION",
    "FASHION_MNIST_DIR",
    "ClassificationData",
    "ClassificationDataset",
    "build_classification_augment",
    "holdout_split",
    "is_classification_dataset",
    "load_cifar100",
    "load_classification",
    "load_fashion_mnist",
    "read_idx",
]

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot"]
CLASSIFICATION_DATASETS = {"fashion_mnist": 10, "cifar100": 100}  # name -> number of classes
VAL_FRACTION = 0.1  # share of train held out for checkpoint selection (attention paper)
SPLIT_SEED = 0  # fixed: every training seed selects on the same validation images


def is_classification_dataset(name: str) -> bool:
    return name in CLASSIFICATION_DATASETS


@dataclass
class ClassificationData:
    """Images (N,H,W) grey or (N,H,W,3) RGB uint8, int64 labels, class names."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# idx format (LeCun): 2 zero bytes, a type code, the number of dims, then big-endian uint32 dims.
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read a (gzip'd) idx file; written by hand because no library we depend on reads idx files."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path} is not an idx file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(raw, dtype=_IDX_TYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {tuple(dims)} but holds {data.size} values")
    return data.reshape(tuple(dims))


def _resize_stack(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[1] == size and images.shape[2] == size:
        return np.ascontiguousarray(images)
    return np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR) for im in images])


def load_fashion_mnist(root: str | Path | None = None, size: int = 32) -> ClassificationData:
    root = Path(dataset_root("fashion_mnist", root) or FASHION_MNIST_DIR)
    files = {k: root / f"{k}-idx{1 if 'labels' in k else 3}-ubyte.gz" for k in
             ("train-images", "train-labels", "t10k-images", "t10k-labels")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"Fashion-MNIST not found ({missing[0]}); install the Debian package with "
                                f"`apt-get install dataset-fashion-mnist` (files in {FASHION_MNIST_DIR})")
    x_tr, x_te = (_resize_stack(read_idx(files[k]), size) for k in ("train-images", "t10k-images"))
    y_tr, y_te = (read_idx(files[k]).astype(np.int64) for k in ("train-labels", "t10k-labels"))
    return ClassificationData(x_tr, y_tr, x_te, y_te, list(FASHION_MNIST_CLASSES))


class _ArrayUnpickler(pickle.Unpickler):
    """Only numpy arrays and plain containers: a pickle from disk must not be able to run code."""

    _ALLOWED = frozenset({
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how Python 3 writes bytes in protocol-2 pickles
    })

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset pickle")


def _load_pickle(path: Path) -> dict[str, object]:
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-100 file not found: {path} (expected the official cifar-100-python folder)")
    with open(path, "rb") as f:
        obj = _ArrayUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a CIFAR dict")
    # The official files were written by Python 2; depending on the writer keys are str or bytes.
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _cifar_split(path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = _load_pickle(path)
    data = np.asarray(d["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: 'data' must be N x 3072 uint8, got {data.shape}")
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # rows are R plane, G plane, B plane
    y = np.asarray(d["fine_labels"], dtype=np.int64)
    if len(y) != len(x):
        raise ValueError(f"{path}: {len(x)} images but {len(y)} fine labels")
    return np.ascontiguousarray(x), y


def load_cifar100(root: str | Path) -> ClassificationData:
    root = Path(root)
    x_tr, y_tr = _cifar_split(root / "train")
    x_te, y_te = _cifar_split(root / "test")
    names = _load_pickle(root / "meta")["fine_label_names"]
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]  # type: ignore[union-attr]
    return ClassificationData(x_tr, y_tr, x_te, y_te, classes)


def load_classification(name: str, root: str | Path | None) -> ClassificationData:
    if name == "fashion_mnist":
        return load_fashion_mnist(dataset_root(name, root))
    if name == "cifar100":
        root = dataset_root(name, root)
        if root is None:
            raise ValueError("cifar100 needs data.root: the cifar-100-python folder")
        return load_cifar100(root)
    raise ValueError(f"unknown classification dataset {name!r}; known: {', '.join(CLASSIFICATION_DATASETS)}")


def holdout_split(labels: np.ndarray, val_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx): ``round(N * val_fraction)`` images held out, stratified by class, deterministic.

    Each class gives ``floor(n_c * val_fraction)``; the remainder goes to the classes with the largest
    fractional parts (random tie-break), so tiny data with many classes still gets a validation set.
    """
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * val_fraction
    take = np.floor(exact).astype(int)
    rest = round(len(labels) * val_fraction) - int(take.sum())
    order = np.lexsort((rng.random(len(classes)), -(exact - take)))
    take[order[:rest]] += 1
    val = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return train_idx, val_idx


def build_classification_augment(size: int, strength: str = "default") -> v2.Transform:
    """The standard CIFAR recipe: random crop with 4 px padding + horizontal flip."""
    if strength == "none":
        return v2.Identity()
    return v2.Compose([v2.RandomCrop(size, padding=4, padding_mode="reflect"), v2.RandomHorizontalFlip()])


class ClassificationDataset(Dataset):
    """Items: (uint8 3xSxS tensor, int64 label); grey images are copied to 3 channels, resized if S differs."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, index: np.ndarray, size: int,
                 augment: v2.Transform | None = None) -> None:
        self.images, self.labels, self.index, self.size = images, labels, np.asarray(index), size
        self.augment = augment
        self.resize = None if images.shape[1] == size else v2.Resize((size, size), antialias=True)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = self.index[i]
        img = torch.from_numpy(np.asarray(self.images[j]))
        img = img.unsqueeze(0).expand(3, -1, -1) if img.ndim == 2 else img.permute(2, 0, 1)
        img = img.contiguous()
        if self.resize is not None:
            img = self.resize(img)
        if self.augment is not None:
            img = self.augment(img)
        return img, int(self.labels[j])


class ClassificationDataModule(L.LightningDataModule):
    """Fashion-MNIST / CIFAR-100 arrays -> train (90%), val (10% held out), test (official) loaders."""

    def __init__(self, cfg: Any, model_cfg: Any) -> None:
        super().__init__()
        self.cfg, self.model_cfg = cfg, model_cfg
        self.data: ClassificationData | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        d = self.cfg.data
        self.data = load_classification(d.dataset, d.root)
        train_idx, val_idx = holdout_split(self.data.train_y, VAL_FRACTION, SPLIT_SEED)
        rng = np.random.default_rng(self.cfg.trainer.seed)

        def limit(idx: np.ndarray, n: int | None) -> np.ndarray:
            return np.sort(rng.choice(idx, n, replace=False)) if n is not None and n < len(idx) else idx

        self.idx = {"train": limit(train_idx, d.limit_train), "val": limit(val_idx, d.limit_val),
                    "test": limit(np.arange(len(self.data.test_y)), d.limit_test)}
        if len(self.idx["train"]) == 0 or len(self.idx["val"]) == 0:
            raise ValueError(f"{d.dataset}: too few images for a train set and a {VAL_FRACTION:.0%} validation set")

    def _loader(self, split: str) -> DataLoader:
        size = self.model_cfg.input_size[-1]
        x, y = (self.data.train_x, self.data.train_y) if split != "test" else (self.data.test_x, self.data.test_y)
        aug = build_classification_augment(size, self.cfg.data.augment) if split == "train" else None
        ds = ClassificationDataset(x, y, self.idx[split], size, aug)
        w, bs, shuffle = self.cfg.data.num_workers, self.cfg.data.batch_size, split == "train"
        return DataLoader(ds, batch_size=bs, shuffle=shuffle, num_workers=w, persistent_workers=w > 0,
                          drop_last=shuffle and len(ds) > bs)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
