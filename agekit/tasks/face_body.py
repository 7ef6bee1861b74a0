"""The face+body task (MiVOLO): age (+ gender) from a face crop and a body crop, either of which may be missing.

Loss, metrics, flip TTA and parity comparison are the face task's (:class:`~agekit.tasks.age.AgeTask`): a
batch is ``((face, body, face_mask, body_mask), age, gender, weight)``, so everything that reads items 1-3 is
shared. What differs: the data (faces and bodies, :class:`~agekit.data.datamodule.FaceBodyDataModule`), how a
batch becomes the model's four inputs (a missing crop is a zero image with mask 0), input dropping during
training, the evaluation (which inputs the model is shown) and the parity inputs.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from ..models.registry import AgeModelCfg
from .age import AgeTask
from .base import register_task

if TYPE_CHECKING:
    from ..config.train import TrainConfig

__all__ = ["FaceBodyTask", "drop_inputs"]


def drop_inputs(face_mask: torch.Tensor, body_mask: torch.Tensor, drop_face_p: float, drop_body_p: float,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """New masks with inputs dropped: of the rows that have both crops, a share ``drop_face_p`` loses its face
    and a share ``drop_body_p`` its body (one uniform draw per row, so never both; rows with one crop keep it)."""
    both = (face_mask > 0.5) & (body_mask > 0.5)
    u = torch.rand(face_mask.shape, generator=generator, device="cpu").to(face_mask.device)
    drop_face = both & (u < drop_face_p)
    drop_body = both & (u >= drop_face_p) & (u < drop_face_p + drop_body_p)
    return face_mask.masked_fill(drop_face, 0.0), body_mask.masked_fill(drop_body, 0.0)


@register_task("face_body")
class FaceBodyTask(AgeTask):
    """Batches: ((uint8 faces, uint8 bodies, face_mask, body_mask), age, gender (-1 unknown), sample weight)."""

    input_kinds = ("face", "body")

    def prepare_config(self, cfg: TrainConfig) -> TrainConfig:
        return cfg  # input dropping (data.drop_face_p / drop_body_p) is this task's

    def datamodule(self, cfg: TrainConfig, model_cfg: AgeModelCfg):
        from ..data.datamodule import FaceBodyDataModule

        return FaceBodyDataModule(cfg, model_cfg)

    def model_inputs(self, x: Any, prepare: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """(face, body, face_mask, body_mask): both crops normalised, a missing one all zeros (as at prediction)."""
        face, body, fm, bm = x
        fm, bm = fm.float(), bm.float()
        f, b = prepare(face), prepare(body)
        f = torch.where(fm.reshape(-1, 1, 1, 1) > 0.5, f, torch.zeros_like(f))
        b = torch.where(bm.reshape(-1, 1, 1, 1) > 0.5, b, torch.zeros_like(b))
        return f, b, fm, bm

    def train_batch(self, batch: Sequence[Any], cfg: TrainConfig) -> Sequence[Any]:
        """Drop inputs at ``data.drop_face_p`` / ``data.drop_body_p`` (:func:`drop_inputs`)."""
        d = cfg.data
        if not (d.drop_face_p or d.drop_body_p):
            return batch
        (face, body, fm, bm), *rest = batch
        fm, bm = drop_inputs(fm, bm, d.drop_face_p, d.drop_body_p)
        return ((face, body, fm, bm), *rest)

    def example_batch(self, cfg: TrainConfig, model_cfg: AgeModelCfg, batch_size: int) -> tuple[Any, ...]:
        size = model_cfg.input_size[-1]
        img = lambda: torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8)  # noqa: E731
        masks = torch.ones(batch_size), torch.ones(batch_size)
        return ((img(), img(), *masks), torch.rand(batch_size) * 80, torch.randint(0, 2, (batch_size,)),
                torch.ones(batch_size))

    def evaluate(self, model: str | Path, data: str, split: str = "test", root: str | None = None, **kwargs: Any):
        """:func:`agekit.evaluation.face_body.evaluate_face_body` (``inputs``: face+body, face or body)."""
        from ..evaluation.face_body import evaluate_face_body

        return evaluate_face_body(model, data, split, root, **kwargs)

    def parity_inputs(self, check_data: str | Path | None, cfg: AgeModelCfg, n: int = 64,
                      root: str | Path | None = None, **kwargs: Any) -> tuple[dict[str, np.ndarray], str]:
        from ..evaluation.face_body import face_body_parity_inputs

        return face_body_parity_inputs(check_data, cfg, n, root, **kwargs)
