"""Where each dataset lives: resolved here and nowhere else, so an environment variable works for every command.

Order: the explicit value (``--root``, ``data.root``), then ``AGEKIT_<NAME>_ROOT`` (e.g. ``AGEKIT_UTKFACE_ROOT``;
``AGEKIT_UTKFACE`` is kept as an alias), then ``$AGEKIT_DATA_ROOT/<Folder>`` (for a packaged dataset, only when that folder exists), then the dataset's default place
(``../shared/data/<Folder>`` relative to the working directory, or a system folder for packaged datasets).
"""
from __future__ import annotations

import os
import re

__all__ = ["DATASET_FOLDERS", "FASHION_MNIST_DIR", "SHARED_DATA", "dataset_root", "env_var"]

SHARED_DATA = "../shared/data"
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist

# dataset name -> folder name under AGEKIT_DATA_ROOT / ../shared/data
DATASET_FOLDERS: dict[str, str] = {
    "utkface": "UTKFace",
    "aaf": "AAF",
    "peta": "PETA",
    "fgnet": "FGNET",
    "lagenda": "LAGENDA",
    "cifar100": "cifar-100-python",
    "fashion_mnist": "fashion-mnist",
}
# datasets whose last-resort default is not under ../shared/data
_SYSTEM_DEFAULTS: dict[str, str] = {"fashion_mnist": FASHION_MNIST_DIR}
_ALIASES: dict[str, tuple[str, ...]] = {"utkface": ("AGEKIT_UTKFACE",)}


def env_var(name: str) -> str:
    """``AGEKIT_<NAME>_ROOT`` for a dataset name (non-alphanumerics become ``_``)."""
    return f"AGEKIT_{re.sub(r'[^0-9A-Za-z]+', '_', name).upper()}_ROOT"


def dataset_root(name: str, given: str | os.PathLike[str] | None = None) -> str | None:
    """The folder of dataset ``name``: ``given`` when set, else the environment, else the default (None if unknown)."""
    if given is not None and str(given) != "":
        return str(given)
    for var in (env_var(name), *_ALIASES.get(name, ())):
        if os.environ.get(var):
            return os.environ[var]
    folder = DATASET_FOLDERS.get(name)
    if folder is None:
        return None
    if os.environ.get("AGEKIT_DATA_ROOT"):
        under = os.path.join(os.environ["AGEKIT_DATA_ROOT"], folder)
        # a packaged dataset (Fashion-MNIST from Debian) is seldom copied under the data root: where the root
        # lacks it, the package's folder still serves
        if name not in _SYSTEM_DEFAULTS or os.path.isdir(under):
            return under
    return _SYSTEM_DEFAULTS.get(name, f"{SHARED_DATA}/{folder}")
