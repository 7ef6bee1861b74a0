"""Torch datasets over a manifest, reading face crops from the decode-once cache."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from .adapters import get_adapter
from .manifest import read_manifest
from .splits import apply_split_file, random_split

__all__ = ["FaceCropDataset", "FaceBodyDataset", "resolve_manifest", "default_split_file"]

SPLITS_DIR = Path(__file__).parent / "splits"


def default_split_file(dataset: str) -> Path | None:
    p = SPLITS_DIR / f"{dataset}_v1.csv"
    return p if p.is_file() else None


def resolve_manifest(dataset: str, root: str | None, manifest: str | None, split_file: str | None,
                     seed: int = 0) -> pd.DataFrame:
    """The labelled, split table a training or evaluation run works on.

    A prepared manifest is used as is (it must carry a ``split`` column). Otherwise the dataset
    adapter reads ``root`` and the shipped benchmark split is applied (``split_file='default'``),
    or a random 80/10/10 split with ``seed`` when no split file exists.
    """
    if manifest is not None:
        df = read_manifest(manifest)
        if "split" not in df.columns:
            raise ValueError(f"manifest {manifest} has no split column; run `agekit data prepare` with a split")
        return df
    df = get_adapter(dataset)(root)
    sf = default_split_file(dataset) if split_file == "default" else (Path(split_file) if split_file else None)
    if sf is not None:
        return apply_split_file(df, sf)
    from .dedup import deduplicate

    df, _ = deduplicate(df)
    return random_split(df, seed=seed)


class FaceCropDataset(Dataset):
    """Items: (uint8 image tensor 3xHxW, age, gender (-1 unknown), sample weight[, age_lo, age_hi]).

    ``bounds`` (lo, hi per row, from :func:`agekit.data.manifest.age_bounds`) adds each row's age group to the
    item, for data with age-group labels; ``age`` is then NaN on group rows (the loss tells them apart).
    """

    def __init__(self, crops: np.ndarray, index: np.ndarray, ages: np.ndarray, genders: np.ndarray,
                 weights: np.ndarray | None = None, bounds: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.crops, self.index = crops, index
        self.ages = ages.astype(np.float32)
        self.genders = genders.astype(np.int64)
        self.weights = np.ones(len(index), np.float32) if weights is None else weights.astype(np.float32)
        self.bounds = None if bounds is None else (bounds[0].astype(np.float32), bounds[1].astype(np.float32))

    def __len__(self) -> int:
        return len(self.index)

    def inputs(self, i: int) -> Any:
        return torch.from_numpy(np.array(self.crops[self.index[i]])).permute(2, 0, 1)

    def __getitem__(self, i: int):
        x = self.inputs(i)
        if self.bounds is not None:
            return x, self.ages[i], self.genders[i], self.weights[i], self.bounds[0][i], self.bounds[1][i]
        return x, self.ages[i], self.genders[i], self.weights[i]


class FaceBodyDataset(FaceCropDataset):
    """Items: ((face uint8 3xHxW, body uint8 3xHxW, face_mask, body_mask), age, gender (-1 unknown), weight).

    The inputs are one tuple, so the face task's loss and metrics (which read items 1-3) apply unchanged;
    a missing crop is a black image with mask 0 (:meth:`agekit.data.cache.FaceBodyCrops.batch`).
    """

    def inputs(self, i: int) -> Any:
        face, body, fm, bm = self.crops.batch(self.index[i:i + 1])
        return (torch.from_numpy(face[0]).permute(2, 0, 1), torch.from_numpy(body[0]).permute(2, 0, 1),
                torch.tensor(fm[0]), torch.tensor(bm[0]))
