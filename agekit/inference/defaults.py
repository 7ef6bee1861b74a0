"""Where the bundled model and example photo live inside the installed package."""
from __future__ import annotations

from pathlib import Path

from ..runtime.runner import BUNDLED_MODEL, bundled_model_path

ASSETS = bundled_model_path().parent
DEFAULT_MODEL = BUNDLED_MODEL
EXAMPLE_PHOTO = "astronaut.jpg"


def default_model_path() -> Path:
    return bundled_model_path()


def example_photo_path() -> Path:
    return ASSETS / EXAMPLE_PHOTO

# What `agekit predict`, `agekit serve` and `agekit.Predictor()` run an agekit weights file with when no backend
# is named: ONNX Runtime (about 3x faster per face than eager PyTorch on a CPU), exported once into the user
# cache and checked against PyTorch there; PyTorch when that fails. See agekit.inference.backend.
DEFAULT_BACKEND = "onnx"
