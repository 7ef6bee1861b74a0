"""agekit: estimate age and gender from photos; train, evaluate and ship the models that do it."""
from __future__ import annotations

__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: keep `import agekit` cheap for the CLI
    if name == "Predictor":
        from .inference.predictor import Predictor

        return Predictor
    raise AttributeError(name)


__all__ = ["Predictor", "__version__"]
