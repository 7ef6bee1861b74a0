"""One calling convention for a model in PyTorch or in ONNX Runtime, so evaluation and benchmarks
score exactly what a user would run: ``runner(x) -> {"age", "gender_logit"}`` as numpy arrays."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from ..export.onnx import AgeRunnerBase, OnnxAgeModel, export_onnx, per_sample
from ..models import load_model
from ..models.registry import AgeModelCfg

__all__ = ["AgeRunner", "TorchAgeModel", "load_runner", "Backend"]

Backend = Literal["torch", "onnx"]


class AgeRunner(Protocol):
    cfg: AgeModelCfg
    crop_margin: float
    backend: str

    def __call__(self, x: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]: ...

    def predict(self, x: np.ndarray | torch.Tensor, tta_flip: bool = False) -> dict[str, np.ndarray]: ...


class TorchAgeModel(AgeRunnerBase):
    """An agekit model in eager PyTorch (CPU, inference mode) with the ONNX runner's interface."""

    backend = "torch"

    def __init__(self, model: torch.nn.Module, cfg: AgeModelCfg, meta: dict[str, Any] | None = None) -> None:
        self.model, self.cfg, self.meta = model.eval(), cfg, dict(meta or {})
        self.crop_margin = float(((self.meta.get("train_config") or {}).get("data") or {}).get("crop_margin", 0.4))

    @classmethod
    def load(cls, path: str | Path) -> "TorchAgeModel":
        model, cfg, meta = load_model(path)
        return cls(model, cfg, meta)

    def __call__(self, x: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) if isinstance(x, np.ndarray) else x.float()
        with torch.inference_mode():
            return {k: per_sample(v.float().cpu().numpy(), len(xt)) for k, v in self.model(xt).items()}


class _OnnxRunner(OnnxAgeModel):
    backend = "onnx"


def load_runner(path: str | Path, backend: Backend | None = None, threads: int | None = None,
                work_dir: str | Path | None = None) -> tuple[AgeRunner, dict[str, Any]]:
    """(runner, info) for an agekit ``.safetensors`` or ``.onnx`` file.

    ``backend=None`` follows the file type. A ``.safetensors`` model with ``backend="onnx"`` is
    exported first (into ``work_dir``), so the ONNX numbers are of the file a user would ship.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    is_onnx = path.suffix.lower() == ".onnx"
    backend = backend or ("onnx" if is_onnx else "torch")
    if backend not in ("torch", "onnx"):
        raise ValueError(f"unknown backend {backend!r}; use torch or onnx")
    if is_onnx and backend == "torch":
        raise ValueError(f"{path} is an ONNX file; evaluate it with backend onnx (or pass the .safetensors model)")
    if threads:
        torch.set_num_threads(threads)
    if backend == "torch":
        runner = TorchAgeModel.load(path)
        return runner, {"path": str(path), "backend": "torch", "model_name": runner.cfg.name,
                        "training_test_metrics": runner.meta.get("test")}
    info: dict[str, Any] = {"path": str(path), "backend": "onnx"}
    if not is_onnx:
        model, cfg, meta = load_model(path)
        work = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="agekit_eval_"))
        onnx_path = export_onnx(model, cfg, work / f"{path.stem}.onnx", metadata=meta)
        info.update(exported_onnx=str(onnx_path), training_test_metrics=meta.get("test"))
        path = onnx_path
    runner = _OnnxRunner(path, threads=threads)
    info["model_name"] = runner.cfg.name
    if "val_mae" in runner.metadata:
        info["val_mae"] = json.loads(runner.metadata["val_mae"])
    return runner, info
