"""LightningDataModule of the face (age + gender) task: manifest -> decode-once crop cache -> loaders.

Under DDP the crop cache is built once: Lightning runs ``prepare_data`` on local rank 0 only, then a
barrier, then ``setup`` on every rank, which opens the finished cache (memory-mapped).

Multi-dataset training (``data.sources``): each source's table is resolved on its own (its shipped or own
split, its ``source`` column), the tables are concatenated and ONE crop cache is built over them
(``data.crop: auto``: UTKFace chips as they are, AAF photos aligned from their landmarks). Training batches
are drawn with replacement by a :class:`~torch.utils.data.WeightedRandomSampler` whose per-row weight is
``source weight / source train size``, so each source's share of draws follows its weight whatever its size;
an epoch is then a count of draws (as many as there are training rows), not one pass over every row.
Validation and test keep every row. Not supported under DDP (one-line error; see ``TrainConfig``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import lightning as L
import numpy as np
import pandas as pd
from rich.console import Console
from rich.markup import escape
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

from ..config.roots import dataset_root
from .cache import build_crop_cache, build_face_body_cache
from .crops import CropSpec
from .datasets import FaceBodyDataset, FaceCropDataset, resolve_manifest
from .lds import lds_weights
from .manifest import FACE_BOX, PERSON_BOX, age_bounds, has_intervals, landmarks_array, resolve_paths
from ..models.registry import AgeModelCfg

if TYPE_CHECKING:
    from ..config.train import TrainConfig

__all__ = ["AgeDataModule", "FaceBodyDataModule", "face_rows", "sources_table", "source_draw_weights", "SOURCE_INDEX"]

SOURCE_INDEX = "source_index"  # column of the concatenated table: which data.sources entry a row came from


def face_rows(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The rows the face task can train on, and how many rows were dropped for having only a person box.

    A row with a person box but neither a face box nor landmarks (LAGENDA) would otherwise be cropped as a
    whole photo; the face+body task uses such rows, the face task must not. (AAF rows have landmarks and a
    whole-photo person box: they are faces.)
    """
    if not set(PERSON_BOX) <= set(df.columns) or not set(FACE_BOX) <= set(df.columns):
        return df, 0
    has_lm = np.isfinite(landmarks_array(df)).all(axis=(1, 2))
    person_only = (df[FACE_BOX].isna().any(axis=1) & df[PERSON_BOX].notna().all(axis=1)).to_numpy() & ~has_lm
    n = int(person_only.sum())
    return (df.loc[~person_only].reset_index(drop=True), n) if n else (df, 0)


def sources_table(cfg: TrainConfig, person_only: bool = False) -> tuple[pd.DataFrame, int]:
    """(the concatenated face table of every source in ``cfg.data``, rows dropped for a person box only).

    Each source is resolved as a single-dataset run would resolve it (adapter + shipped split, or a
    manifest with its split column); paths are made absolute so one table can mix roots. The column
    :data:`SOURCE_INDEX` names the ``data.sources`` entry of each row; ``source`` keeps the dataset name.
    ``person_only=True`` keeps rows with only a person box (face+body models).
    """
    d, parts, skipped = cfg.data, [], 0
    for i, s in enumerate(d.source_list()):
        df = resolve_manifest(s.dataset or "", dataset_root(s.dataset, s.root) if s.dataset else None, s.manifest,
                              s.split_file, seed=cfg.trainer.seed)
        df, n = (df, 0) if person_only else face_rows(df)
        skipped += n
        df = df.assign(path=[str(p) for p in resolve_paths(df)])
        df["source"] = df["source"].fillna(s.name).astype("string")
        df[SOURCE_INDEX] = i
        parts.append(df)
    if len(parts) == 1:
        out = parts[0]
    else:
        out = pd.concat(parts, ignore_index=True)
        if "gender" in out.columns:
            out["gender"] = out["gender"].astype("Int64")
    out.attrs = {"root": "/"}
    return out, skipped


def source_draw_weights(source_index: np.ndarray, weights: list[float]) -> np.ndarray:
    """Per-row sampling weight ``weight[source] / rows of that source``: sources are drawn by weight, not size."""
    source_index = np.asarray(source_index)
    counts = np.bincount(source_index, minlength=len(weights)).astype(np.float64)
    w = np.asarray(weights, dtype=np.float64)
    return w[source_index] / np.maximum(counts[source_index], 1)


class AgeDataModule(L.LightningDataModule):
    dataset_cls: type = FaceCropDataset

    def __init__(self, cfg: TrainConfig, model_cfg: AgeModelCfg) -> None:
        super().__init__()
        self.cfg, self.model_cfg = cfg, model_cfg
        self.df = None
        self.skipped_person_only = 0

    def _table(self) -> pd.DataFrame:
        df, self.skipped_person_only = sources_table(self.cfg)
        return df

    def _cache(self, df: pd.DataFrame):
        d = self.cfg.data
        return build_crop_cache(df, self.model_cfg.input_size[-1], d.cache_dir, CropSpec(d.crop))

    def prepare_data(self) -> None:
        """Local rank 0 only (Lightning): decode every crop once into the cache the other ranks then open."""
        self._cache(self._table())

    def setup(self, stage: str | None = None) -> None:
        if self.df is not None:
            return
        d = self.cfg.data
        df = self._table()
        crops, ok, errors = self._cache(df)  # prepare_data built it: this opens the memory map
        console = Console(stderr=True)
        if self.skipped_person_only:
            console.print(f"[yellow]skipped {self.skipped_person_only} rows with a person box but no face box "
                          "(the face task needs a face)")
        if errors:
            console.print(f"[yellow]skipped {len(errors)} unreadable images, e.g. {escape(errors[0])}")
        self.df, self.crops, self.ok = df, crops, ok
        rng = np.random.default_rng(self.cfg.trainer.seed)
        self.idx = {}
        for split, limit in (("train", d.limit_train), ("val", d.limit_val), ("test", d.limit_test)):
            idx = np.flatnonzero((df["split"] == split).to_numpy() & ok)
            if limit is not None and limit < len(idx):
                idx = np.sort(rng.choice(idx, limit, replace=False))
            self.idx[split] = idx
        if len(self.idx["train"]) == 0 or len(self.idx["val"]) == 0:
            raise ValueError("the data has no train or no val rows; check the split column / split file")

    def _dataset(self, split: str) -> FaceCropDataset:
        idx = self.idx[split]
        sub = self.df.iloc[idx]
        genders = sub["gender"].fillna(-1).to_numpy(dtype=np.int64)
        weights = None
        ages = sub["age"].to_numpy(dtype=np.float64, na_value=np.nan)
        if split == "train" and self.cfg.loss.age == "weighted_mse":
            l = self.cfg.loss
            exact = ~np.isnan(ages)  # LDS weighs exact ages by their rarity; age-group rows keep weight 1
            weights = np.ones(len(ages))
            if exact.any():
                weights[exact] = lds_weights(ages[exact], l.lds_kernel, l.lds_ks, l.lds_sigma, reweight=l.lds_reweight)
        # age groups travel with the batch only when the table has them: plain data keeps 4-item batches
        bounds = None
        if has_intervals(self.df):
            lo, hi = age_bounds(self.df)
            bounds = (lo[idx], hi[idx])
        # Training batches are augmented after collation by the LightningModule (BatchAugment).
        return self.dataset_cls(self.crops, idx, ages, genders, weights, bounds)

    def _loader(self, ds: FaceCropDataset, shuffle: bool, sampler=None) -> DataLoader:
        w = self.cfg.data.num_workers
        return DataLoader(ds, batch_size=self.cfg.data.batch_size, shuffle=shuffle and sampler is None,
                          sampler=sampler, num_workers=w, persistent_workers=w > 0,
                          drop_last=shuffle and len(ds) > self.cfg.data.batch_size)

    def train_sampler(self) -> WeightedRandomSampler | None:
        """With ``data.sources``: draws by source weight (see the module docstring); else None (plain shuffle)."""
        sources = self.cfg.data.sources
        if sources is None:
            return None
        trainer = getattr(self, "trainer", None)
        if trainer is not None and getattr(trainer, "world_size", 1) > 1:
            raise ValueError("data.sources is not supported with more than one device/process yet (the weighted "
                             "sampler is not sharded across ranks); train on one device")
        idx = self.idx["train"]
        w = source_draw_weights(self.df[SOURCE_INDEX].to_numpy()[idx], [s.weight for s in sources])
        g = torch.Generator().manual_seed(self.cfg.trainer.seed)
        return WeightedRandomSampler(torch.as_tensor(w, dtype=torch.double), num_samples=len(idx), replacement=True,
                                     generator=g)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("train"), shuffle=True, sampler=self.train_sampler())

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("val"), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("test"), shuffle=False)


class FaceBodyDataModule(AgeDataModule):
    """The face+body (MiVOLO) task's data: the same tables, splits, limits and sampling as
    :class:`AgeDataModule`, with rows that have a face, a person box or both. Face crops come from the one
    face path (CropSpec, the face cache), body crops from :func:`agekit.data.crops.body_crop` (the body
    cache); a row missing one of them carries mask 0 for it. Inputs are dropped for training in the
    LightningModule's batch transform (``data.drop_face_p`` / ``data.drop_body_p``, agekit.tasks.face_body)."""

    dataset_cls = FaceBodyDataset

    def _table(self) -> pd.DataFrame:
        df, self.skipped_person_only = sources_table(self.cfg, person_only=True)
        return df

    def _cache(self, df: pd.DataFrame):
        d = self.cfg.data
        crops = build_face_body_cache(df, self.model_cfg.input_size[-1], d.cache_dir, CropSpec(d.crop))
        return crops, crops.ok, crops.errors
