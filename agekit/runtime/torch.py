"""The PyTorch runner: the model itself in eval mode under ``torch.inference_mode``."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .runner import Runner, load_torch_model, per_sample

__all__ = ["TorchRunner"]


class TorchRunner(Runner):
    """An agekit ``.safetensors`` model or a Lightning ``.ckpt`` from ``agekit train``."""

    backend = "torch"

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None, **_: Any) -> None:
        model, cfg, meta = load_torch_model(path)
        if threads:
            torch.set_num_threads(threads)
        self._setup(model, cfg, meta, Path(path).expanduser(), device)

    @classmethod
    def from_model(cls, model: torch.nn.Module, cfg: Any, meta: dict[str, Any] | None = None,
                   device: str = "cpu", path: str | Path = "<in memory>") -> "TorchRunner":
        """A runner around a model already in memory (tests, training-time checks)."""
        self = cls.__new__(cls)
        self._setup(model, cfg, dict(meta or {}), Path(path), device)
        return self

    def _setup(self, model: torch.nn.Module, cfg: Any, meta: dict[str, Any], path: Path, device: str) -> None:
        self.cfg, self.meta, self.path = cfg, meta, path
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.input_names = tuple(getattr(model, "input_names", ("input",)))
        with torch.inference_mode():
            if len(self.input_names) > 1:  # a face+body model names its inputs and makes an example of them
                probe = self.model(*(t.to(self.device) for t in model.example_inputs(1)))
            else:
                probe = self.model(torch.zeros(1, *cfg.input_size, device=self.device))
        self.output_names = tuple(probe)

    def __call__(self, x: np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32), device=self.device)

        args = [tensor(x[n]) for n in self.input_names] if isinstance(x, Mapping) else [tensor(x)]
        with torch.inference_mode():
            out = self.model(*args)
        return {k: per_sample(out[k].float().cpu().numpy(), len(args[0])) for k in self.output_names}
