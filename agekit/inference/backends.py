"""Run the age model: PyTorch or onnxruntime behind one call, ``backend(x) -> {"age", "gender_logit"}``.

Both take the same input (float32 NCHW, normalised with the model's cfg, as made by
``agekit.data.transforms.crops_to_batch``) and return numpy arrays, so the predictor does not care
which one it has. The ONNX backend can start from an agekit ``.safetensors`` file: it exports once
to a cache keyed by the file's content hash and reuses that file afterwards.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..models.registry import AgeModelCfg, get_model_cfg
from .runtime import make_session

__all__ = ["Backend", "TorchBackend", "OnnxBackend", "ModelFileError", "export_onnx", "load_backend",
           "cfg_from_onnx", "default_cache_dir", "BACKENDS"]

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

    The model's cfg (input size, mean/std) travels inside the ONNX file's metadata (``agekit_cfg``,
    written by :func:`export_onnx`), falling back to ``model_name`` for files that only name it.
    """

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None,
                 cache_dir: str | Path | None = None) -> None:
        path = _check_file(path)
        if path.suffix != ".onnx":
            path = cached_onnx(path, cache_dir)
        self.path = path
        try:
            self.session = make_session(path, threads, device)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises several unrelated types
            raise ModelFileError(f"cannot load ONNX model {path}: {str(e).splitlines()[0]}") from None
        self.cfg = cfg_from_onnx(self.session.get_modelmeta().custom_metadata_map, path)
        names = [o.name for o in self.session.get_outputs()]
        if "age" not in names or [i.name for i in self.session.get_inputs()] != ["input"]:
            raise ModelFileError(f"{path}: expected input 'input' and outputs 'age'[, 'gender_logit'], got {names}")
        self.outputs = tuple(k for k in ("age", "gender_logit") if k in names)

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        res = self.session.run(list(self.outputs), {"input": np.ascontiguousarray(x, dtype=np.float32)})
        return {k: v.reshape(-1) for k, v in zip(self.outputs, res)}


def cfg_from_onnx(meta: dict[str, str], path: Path | str = "model") -> AgeModelCfg:
    """The AgeModelCfg stored in an ONNX file's metadata (``agekit_cfg`` JSON or a registered ``model_name``)."""
    if "agekit_cfg" in meta:
        d = json.loads(meta["agekit_cfg"])
        for k in ("input_size", "mean", "std", "age_range"):
            if k in d:
                d[k] = tuple(d[k])
        return AgeModelCfg(**d)
    if "model_name" in meta:
        try:
            return get_model_cfg(json.loads(meta["model_name"]) if meta["model_name"].startswith('"') else meta["model_name"])
        except KeyError as e:
            raise ModelFileError(f"{path}: {e.args[0]}") from None
    raise ModelFileError(f"{path}: ONNX file has no agekit metadata (agekit_cfg or model_name); export it with agekit")


def export_onnx(model: Any, cfg: AgeModelCfg, path: str | Path, opset: int = 17) -> Path:
    """Export an agekit model to ONNX: input "input" (B,3,H,W) float32, outputs "age"[, "gender_logit"] (B,).

    Uses the TorchScript exporter (``dynamo=False``): torch 2.14 still ships it (with a
    DeprecationWarning, silenced here) and for these small CNNs it takes ~1 s where the
    torch.export-based exporter takes ~20 s, which matters because prediction exports on first use.
    The cfg is stored in the metadata so the file is self-describing. Written to a temporary name
    and renamed, so a half-written file is never used.
    """
    import warnings

    import onnx
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    x = torch.zeros(1, *cfg.input_size)
    with torch.inference_mode():
        names = [k for k in ("age", "gender_logit") if k in model(x)]

    class _Tuple(torch.nn.Module):  # ONNX outputs are positional; name them explicitly
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, inp: torch.Tensor):  # noqa: ANN202
            out = self.m(inp)
            return tuple(out[k] for k in names)

    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                _Tuple(model), (x,), tmp, input_names=["input"], output_names=names, opset_version=opset,
                dynamic_axes={"input": {0: "batch"}, **{n: {0: "batch"} for n in names}}, dynamo=False,
            )
        proto = onnx.load(tmp)
        onnx.helper.set_model_props(proto, {"agekit_cfg": json.dumps(cfg.to_dict()), "model_name": cfg.name})
        onnx.save(proto, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def default_cache_dir() -> Path:
    """``AGEKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/agekit``, else ``~/.cache/agekit``."""
    if os.environ.get("AGEKIT_CACHE_DIR"):
        return Path(os.environ["AGEKIT_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "agekit"


def cached_onnx(weights: Path, cache_dir: str | Path | None = None) -> Path:
    """ONNX export of an agekit weights file, made once per file content."""
    from ..models import WeightsError, load_model

    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    out = Path(cache_dir or default_cache_dir()).expanduser() / "onnx" / f"{weights.stem}-{digest}.onnx"
    if not out.is_file():
        try:
            model, cfg, _ = load_model(weights)
        except WeightsError as e:
            raise ModelFileError(str(e)) from None
        export_onnx(model, cfg, out)
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
