"""LightningDataModule of the face (age + gender) task: manifest -> decode-once crop cache -> loaders.

Under DDP the crop cache is built once: Lightning runs ``prepare_data`` on local rank 0 only, then a
barrier, then ``setup`` on every rank, which opens the finished cache (memory-mapped).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import lightning as L
import numpy as np
import pandas as pd
from rich.console import Console
from torch.utils.data import DataLoader

from ..config.roots import dataset_root
from .cache import build_crop_cache
from .crops import CropSpec
from .datasets import FaceCropDataset, resolve_manifest
from .lds import lds_weights
from .manifest import FACE_BOX, PERSON_BOX
from ..models.registry import AgeModelCfg

if TYPE_CHECKING:
    from ..config.train import TrainConfig

__all__ = ["AgeDataModule", "face_rows"]


def face_rows(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The rows the face task can train on, and how many rows were dropped for having only a person box.

    A row with a person box but no face box (LAGENDA) would otherwise be cropped as a whole photo;
    the face+body task uses such rows, the face task must not.
    """
    if not set(PERSON_BOX) <= set(df.columns) or not set(FACE_BOX) <= set(df.columns):
        return df, 0
    person_only = (df[FACE_BOX].isna().any(axis=1) & df[PERSON_BOX].notna().all(axis=1)).to_numpy()
    n = int(person_only.sum())
    return (df.loc[~person_only].reset_index(drop=True), n) if n else (df, 0)


class AgeDataModule(L.LightningDataModule):
    def __init__(self, cfg: TrainConfig, model_cfg: AgeModelCfg) -> None:
        super().__init__()
        self.cfg, self.model_cfg = cfg, model_cfg
        self.df = None
        self.skipped_person_only = 0

    def _table(self) -> pd.DataFrame:
        d = self.cfg.data
        df = resolve_manifest(d.dataset, dataset_root(d.dataset, d.root), d.manifest, d.split_file,
                              seed=self.cfg.trainer.seed)
        df, self.skipped_person_only = face_rows(df)
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
            console.print(f"[yellow]skipped {len(errors)} unreadable images, e.g. {errors[0]}")
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
        if split == "train" and self.cfg.loss.age == "weighted_mse":
            l = self.cfg.loss
            weights = lds_weights(sub["age"].to_numpy(), l.lds_kernel, l.lds_ks, l.lds_sigma, reweight=l.lds_reweight)
        # Training batches are augmented after collation by the LightningModule (BatchAugment).
        return FaceCropDataset(self.crops, idx, sub["age"].to_numpy(), genders, weights)

    def _loader(self, ds: FaceCropDataset, shuffle: bool) -> DataLoader:
        w = self.cfg.data.num_workers
        return DataLoader(ds, batch_size=self.cfg.data.batch_size, shuffle=shuffle, num_workers=w,
                          persistent_workers=w > 0, drop_last=shuffle and len(ds) > self.cfg.data.batch_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("train"), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("val"), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("test"), shuffle=False)
