"""ONNX export of agekit models (the runner for the files is :class:`agekit.runtime.onnx.OnnxRunner`).

The exported graph takes ``input`` (float32 NCHW, RGB, normalised with the model's mean/std, any
batch size) and returns ``age`` (years) and ``gender_logit`` (> 0 means female); models with an age
distribution head (``age_head``, :mod:`agekit.models.heads`) also return ``age_std`` (years, (B,)) and, for
dldl/mean_variance, ``age_dist`` ((B, K) probabilities of the integer ages 0..K-1). Everything needed
to feed it (input size, mean, std, age range, crop geometry) is written into the file's
``metadata_props``, so an ``.onnx`` file is usable without agekit's model registry.

A face+body model (MiVOLO) takes four inputs instead of ``input``: ``face`` and ``body`` (as above; a body is
a letterboxed person crop) and ``face_mask``, ``body_mask`` (float32 (B,), 1 present / 0 missing), all with the
dynamic batch axis; its metadata lists them (``inputs``).
"""
from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..models.registry import AgeModelCfg, get_model_cfg, is_model

__all__ = ["INPUT_NAME", "OUTPUT_NAMES", "DEFAULT_OPSET", "export_onnx", "onnx_metadata", "read_onnx_metadata",
           "cfg_from_metadata", "example_inputs"]

INPUT_NAME = "input"
# logits: classifiers (research grids); age_std / age_dist: age heads other than plain regression
OUTPUT_NAMES = ("age", "gender_logit", "logits", "age_std", "age_dist")
# per output: (metadata description, short form for the graph's doc string); keyed by output, not by task
OUTPUT_DOCS = {"age": ("age: years (B,), the mean of the age distribution for distribution heads", "age (years)"),
               "gender_logit": ("gender_logit: (B,), sigmoid = P(female)", "gender_logit (>0 female)"),
               "logits": ("logits: (B, classes)", "class logits"),
               "age_std": ("age_std: years (B,), the model's own standard deviation of age", "age_std (years)"),
               "age_dist": ("age_dist: (B, K), probabilities of the integer ages 0..K-1", "age_dist (P(age=k))")}
FACE_BODY_INPUT_FORMAT = (
    "face, body: float32 NCHW RGB, x = (pixel/255 - mean) / std, resized to input_size; face is a 200x200 chip "
    "aligned by a 5-point similarity onto agekit's UTKFace-chip template, body is the person box with other "
    "people blacked out, letterboxed (aspect kept, black borders); face_mask, body_mask: float32 (B,), 1 = the "
    "crop is present, 0 = missing (feed zeros for a missing crop)")
DEFAULT_OPSET = 18  # the torch.export-based exporter's lowest native opset
METADATA_VERSION = "1"


def onnx_metadata(cfg: AgeModelCfg, meta: Mapping[str, Any] | None = None,
                  output_names: tuple[str, ...] | list[str] | None = None) -> dict[str, str]:
    """String key/values for ``metadata_props``: what a runtime needs to preprocess and read outputs."""
    meta = dict(meta or {})
    kwargs = meta.get("model_kwargs") or {}
    age_range = kwargs.get("age_range", cfg.age_range)
    from .. import __version__

    full_cfg = {**cfg.to_dict(), "age_range": list(age_range)}
    out = {
        "agekit_metadata_version": METADATA_VERSION,
        "agekit_cfg": json.dumps(full_cfg, default=str),  # the whole AgeModelCfg, as agekit.inference reads it
        "agekit_version": __version__,
        "model_name": cfg.name,
        "family": cfg.family,
        "input_size": json.dumps(list(cfg.input_size)),
        "mean": json.dumps(list(cfg.mean)),
        "std": json.dumps(list(cfg.std)),
        "age_range": json.dumps(list(age_range)),
        "input_format": ("float32 NCHW RGB, x = (pixel/255 - mean) / std; the face is a 200x200 chip aligned by a "
                         "5-point similarity onto agekit's UTKFace-chip template (agekit.data.align.TEMPLATE), "
                         "resized to input_size"),
        "task": cfg.task,
        "outputs": "; ".join(OUTPUT_DOCS[n][0] for n in (output_names or ()) if n in OUTPUT_DOCS),
    }
    for key in ("val_mae", "epoch", "calibration"):  # calibration: runners of the export give intervals too
        if meta.get(key) is not None:
            out[key] = json.dumps(meta[key])
    return out


def example_inputs(model: nn.Module, cfg: AgeModelCfg, batch: int = 2) -> tuple[list[str], tuple[torch.Tensor, ...]]:
    """(input names, example tensors): ``input`` for a face model; a face+body model (MiVOLO) names its inputs
    (``face, body, face_mask, body_mask``) and makes examples with every mask combination, so tracing sees
    them all."""
    names = list(getattr(model, "input_names", (INPUT_NAME,)))
    if len(names) > 1:
        return names, tuple(model.example_inputs(batch, generator=torch.Generator().manual_seed(0)))
    return names, (torch.randn(batch, *cfg.input_size, generator=torch.Generator().manual_seed(0)),)


def _output_names(model: nn.Module, args: tuple[torch.Tensor, ...]) -> list[str]:
    with torch.inference_mode():
        keys = list(model(*args).keys())
    unknown = [k for k in keys if k not in OUTPUT_NAMES]
    if unknown:
        raise ValueError(f"model returns outputs {keys}; the ONNX exporter knows {list(OUTPUT_NAMES)}")
    return keys


def export_onnx(model: nn.Module, cfg: AgeModelCfg, path: str | Path, *, opset: int = DEFAULT_OPSET,
                metadata: Mapping[str, Any] | None = None, dynamo: bool | None = None) -> Path:
    """Write ``model`` as a single-file ONNX graph with a dynamic batch axis and agekit metadata.

    ``dynamo=None`` picks the torch.export-based exporter for opset >= 18 (the supported path in
    current PyTorch) and the TorchScript exporter for older opsets, which only it can still emit.
    ``metadata`` is the agekit weights metadata (model_kwargs, train_config ...), used for age range
    and the provenance.
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().to(device="cpu", memory_format=torch.contiguous_format)
    inputs, args = example_inputs(model, cfg, 2)
    names = _output_names(model, args)
    use_dynamo = opset >= DEFAULT_OPSET if dynamo is None else dynamo
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        if use_dynamo:
            batch = torch.export.Dim("batch")
            torch.onnx.export(model, args, str(path), dynamo=True, external_data=False, verbose=False,
                              input_names=inputs, output_names=names, opset_version=opset,
                              dynamic_shapes=tuple({0: batch} for _ in args))
        else:
            axes = {n: {0: "batch"} for n in [*inputs, *names]}
            torch.onnx.export(model, args, str(path), dynamo=False, input_names=inputs, output_names=names,
                              opset_version=opset, dynamic_axes=axes, do_constant_folding=True)
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    md = onnx_metadata(cfg, metadata, names)
    if len(inputs) > 1:
        md["inputs"] = json.dumps(inputs)
        md["input_format"] = FACE_BODY_INPUT_FORMAT
    for k, v in md.items():
        proto.metadata_props.add(key=k, value=v)
    proto.doc_string = f"agekit {cfg.name}: {' + '.join(inputs) if len(inputs) > 1 else 'image'} -> " + \
        ", ".join(OUTPUT_DOCS[n][1] for n in names)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def read_onnx_metadata(source: Any) -> dict[str, str]:
    """``metadata_props`` of an ONNX file path or an onnxruntime session."""
    if hasattr(source, "get_modelmeta"):
        return dict(source.get_modelmeta().custom_metadata_map)
    import onnx

    proto = onnx.load(str(source), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def cfg_from_metadata(md: Mapping[str, str]) -> AgeModelCfg:
    """An :class:`AgeModelCfg` from ONNX metadata; the file's values win over the registry's.

    Reads the per-field keys written by :func:`onnx_metadata`, else a whole ``agekit_cfg`` JSON.
    """
    if "input_size" not in md and "agekit_cfg" in md:
        d = json.loads(md["agekit_cfg"])
        md = {**md, **{k: json.dumps(d[k]) for k in ("input_size", "mean", "std", "age_range") if k in d},
              "model_name": d.get("name", md.get("model_name", "onnx_model")), "family": d.get("family", "onnx")}
    if "input_size" not in md or "mean" not in md or "std" not in md:
        raise ValueError("ONNX file has no agekit metadata (input_size/mean/std); export it with `agekit export`")
    name = md.get("model_name", "onnx_model")
    fields = {"input_size": tuple(json.loads(md["input_size"])), "mean": tuple(json.loads(md["mean"])),
              "std": tuple(json.loads(md["std"]))}
    if "age_range" in md:
        fields["age_range"] = tuple(json.loads(md["age_range"]))
    if is_model(name):
        return replace(get_model_cfg(name), **fields)
    return AgeModelCfg(name=name, family=md.get("family", "onnx"), task=md.get("task", "age"), **fields)

