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
