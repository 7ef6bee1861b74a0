"""LightningDataModule: manifest -> decode-once crop cache -> train/val/test loaders."""
from __future__ import annotations

import lightning as L
import numpy as np
from rich.console import Console
from torch.utils.data import DataLoader

from ..config.roots import dataset_root
from ..data.cache import build_crop_cache
from ..data.crops import CropSpec
from ..data.datasets import FaceCropDataset, resolve_manifest
from ..data.lds import lds_weights
from ..models.registry import AgeModelCfg
from ..config.train import TrainConfig

__all__ = ["AgeDataModule"]


class AgeDataModule(L.LightningDataModule):
    def __init__(self, cfg: TrainConfig, model_cfg: AgeModelCfg) -> None:
        super().__init__()
        self.cfg, self.model_cfg = cfg, model_cfg
        self.df = None

    def setup(self, stage: str | None = None) -> None:
        if self.df is not None:
            return
        d = self.cfg.data
        df = resolve_manifest(d.dataset, dataset_root(d.dataset, d.root), d.manifest, d.split_file,
                              seed=self.cfg.trainer.seed)
        crops, ok, errors = build_crop_cache(df, self.model_cfg.input_size[-1], d.cache_dir, CropSpec(d.crop))
        if errors:
            Console(stderr=True).print(f"[yellow]skipped {len(errors)} unreadable images, e.g. {errors[0]}")
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
