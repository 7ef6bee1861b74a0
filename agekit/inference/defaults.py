"""Where the bundled model and example photo live inside the installed package."""
from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEFAULT_MODEL = "mobileagenet_lite0_utkface.safetensors"
EXAMPLE_PHOTO = "astronaut.jpg"


def default_model_path() -> Path:
    return ASSETS / DEFAULT_MODEL


def example_photo_path() -> Path:
    return ASSETS / EXAMPLE_PHOTO
