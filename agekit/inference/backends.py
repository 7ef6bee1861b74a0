"""Run the age model: PyTorch or onnxruntime behind one call, ``backend(x) -> {"age", "gender_logit"}``.

Both take the same input (float32 NCHW, normalised with the model's cfg, as made by
``agekit.data.transforms.crops_to_batch``) and return numpy arrays, so the predictor does not care
which one it has. The ONNX backend can start from an agekit ``.safetensors`` file: it exports once
to a cache keyed by the file's content hash and reuses that file afterwards.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol

import numpy as np

from ..models.registry import AgeModelCfg

__all__ = ["Backend", "TorchBackend", "OnnxBackend", "ModelFileError", "load_backend", "cached_onnx",
           "default_cache_dir", "BACKENDS"]

BACKENDS = ("torch", "onnx")


class ModelFileError(FileNotFoundError):
    """The model file is missing or unusable; the message says which file and what to do."""


class Backend(Protocol):
    cfg: AgeModelCfg
    outputs: tuple[str, ...]

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]: ...


def _check_file(path: str | Path) -> Path:
    path = Path(os.path.expanduser(str(path)))
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    return path


class TorchBackend:
    """A model from ``agekit.models.load_model`` in eval mode under ``torch.inference_mode``."""

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None) -> None:
        import torch

        from ..models import WeightsError, load_model

        path = _check_file(path)
        if threads:
            torch.set_num_threads(threads)
        try:
            model, self.cfg, self.meta = load_model(path)
        except WeightsError as e:
            raise ModelFileError(str(e)) from None
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.path = path
        with torch.inference_mode():
            probe = self.model(torch.zeros(1, *self.cfg.input_size, device=self.device))
        self.outputs = tuple(k for k in ("age", "gender_logit") if k in probe)

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self.model(torch.as_tensor(x, dtype=torch.float32, device=self.device))
        return {k: out[k].float().cpu().numpy().reshape(-1) for k in self.outputs}


class OnnxBackend:
    """An onnxruntime session on an ``.onnx`` file (or a ``.safetensors`` one, exported once and cached).

    A thin layer over :class:`agekit.export.onnx.OnnxAgeModel` (which reads the model's cfg from the
    file's metadata) that turns load failures into :class:`ModelFileError`.
    """

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None,
                 cache_dir: str | Path | None = None) -> None:
        from ..export.onnx import OnnxAgeModel

        path = _check_file(path)
        if path.suffix != ".onnx":
            path = cached_onnx(path, cache_dir)
        self.path = path
        try:
            self.runner = OnnxAgeModel(path, threads=threads, device=device)
        except Exception as e:  # noqa: BLE001 - onnxruntime and metadata parsing raise unrelated types
            raise ModelFileError(f"cannot load ONNX model {path}: {str(e).splitlines()[0]}") from None
        self.cfg = self.runner.cfg
        names = self.runner.output_names
        self.outputs = tuple(k for k in ("age", "gender_logit") if k in names)
        if "age" not in names or self.runner.input_name != "input":
            raise ModelFileError(f"{path}: expected input 'input' and outputs 'age'[, 'gender_logit'], got {names}")

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return self.runner(x)


def default_cache_dir() -> Path:
    """``AGEKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/agekit``, else ``~/.cache/agekit``."""
    if os.environ.get("AGEKIT_CACHE_DIR"):
        return Path(os.environ["AGEKIT_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "agekit"


def cached_onnx(weights: Path, cache_dir: str | Path | None = None) -> Path:
    """ONNX export of an agekit weights file, made once per file content."""
    from ..export.onnx import export_onnx
    from ..models import WeightsError, load_model

    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    out = Path(cache_dir or default_cache_dir()).expanduser() / "onnx" / f"{weights.stem}-{digest}.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.is_file():
        try:
            model, cfg, meta = load_model(weights)
        except WeightsError as e:
            raise ModelFileError(str(e)) from None
        # opset 17 uses the TorchScript exporter: ~1-2 s here vs ~15 s for the dynamo one, and
        # prediction pays it on first use. Written to a temp name and renamed: never half a file.
        fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=out.parent)
        os.close(fd)
        try:
            export_onnx(model, cfg, tmp, opset=17, metadata=meta)
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return out


def load_backend(model: str | Path, backend: str = "torch", device: str = "cpu", threads: int | None = None,
                 cache_dir: str | Path | None = None) -> Backend:
    """The backend named ``backend`` on the model file ``model``."""
    if backend == "torch":
        if Path(str(model)).suffix == ".onnx":
            raise ModelFileError(f"{model} is an ONNX file; use backend='onnx' for it")
        return TorchBackend(model, device=device, threads=threads)
    if backend == "onnx":
        return OnnxBackend(model, device=device, threads=threads, cache_dir=cache_dir)
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
