"""Shared fixtures. Tests make their own small data; real UTKFace is used only when ../shared is present."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from agekit.config.roots import dataset_root

torch.set_num_threads(int(os.environ.get("AGEKIT_TEST_THREADS", "2")))

REPO = Path(__file__).resolve().parents[1]
# the env vars of agekit.config.roots (AGEKIT_UTKFACE_ROOT, AGEKIT_UTKFACE, AGEKIT_DATA_ROOT), else ../shared
UTKFACE = (REPO / dataset_root("utkface")).resolve()


@pytest.fixture(scope="session")
def utkface_root() -> Path:
    if not UTKFACE.is_dir():
        pytest.skip("real UTKFace not present (../shared/data/UTKFace)")
    return UTKFACE


@pytest.fixture(scope="session")
def utkface_subset(utkface_root: Path, tmp_path_factory) -> Path:
    """A small real UTKFace folder: 60 chips spread over ages and both genders (copied, not committed)."""
    out = tmp_path_factory.mktemp("utk_subset")
    names = sorted(p.name for p in utkface_root.iterdir())
    rng = np.random.default_rng(0)
    for name in rng.choice(names, 60, replace=False):
        shutil.copy(utkface_root / name, out / name)
    return out


@pytest.fixture(scope="session")
def load_script():
    """Imports a repo script (scripts/, benchmarks/) by its path: they are not a package, yet tests call their functions."""
    import importlib.util

    def load(rel: str, name: str):
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / rel)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load


@pytest.fixture(scope="session")
def calib_chips(utkface_subset: Path, tmp_path_factory) -> Path:
    """24 real chips for int8 calibration, none of them among the first ones the parity checks use."""
    out = tmp_path_factory.mktemp("calib")
    for f in sorted(utkface_subset.iterdir())[-24:]:
        shutil.copy(f, out / f.name)
    return out


@pytest.fixture(scope="session")
def random_model_file(tmp_path_factory) -> Path:
    """An untrained mobileagenet_lite0 saved as an agekit safetensors file (fast, no training)."""
    from agekit.models import create_model, save_weights

    torch.manual_seed(0)
    model = create_model("mobileagenet_lite0").eval()
    path = tmp_path_factory.mktemp("models") / "lite0_random.safetensors"
    save_weights(model, path, {"model_name": "mobileagenet_lite0", "model_kwargs": {}})
    return path


@pytest.fixture(scope="session")
def bundled_model_file() -> Path:
    from agekit.inference.defaults import default_model_path

    p = default_model_path()
    if not p.is_file():
        pytest.skip("bundled model not present")
    return p


@pytest.fixture(scope="session")
def agekit_server(tmp_path_factory):
    """The real `agekit serve` (CLI, uvicorn, bundled model, 2 workers) on a free loopback port, shared by the API
    and browser tests. Small limits so the limit tests need small uploads."""
    from agekit.serving.process import ServerProcess

    log = tmp_path_factory.mktemp("serve") / "server.log"
    with ServerProcess(["--workers", "2", "--max-bytes", "2000000", "--max-pixels", "4000000"], log=log) as srv:
        yield srv


@pytest.fixture(scope="session", autouse=True)
def _private_user_cache(tmp_path_factory):
    """The default backend exports models into the user cache; tests use a temporary one instead."""
    old = os.environ.get("AGEKIT_CACHE_DIR")
    os.environ["AGEKIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("user_cache"))
    yield
    if old is None:
        os.environ.pop("AGEKIT_CACHE_DIR", None)
    else:
        os.environ["AGEKIT_CACHE_DIR"] = old
