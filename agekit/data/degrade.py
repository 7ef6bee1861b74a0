"""The "old-photo" degradation: faded, sepia or greyscale colour, blur, down-then-up scaling, sensor or
film noise and JPEG re-compression, each drawn at random per image on a whole uint8 batch.

Used two ways (the recipe is written down in docs/degradation.md):
- training: :class:`OldPhotoDegrade` with ``p = data.degrade_p`` after :class:`BatchAugment`;
- the benchmark (``agekit eval --degrade old-photo``): :func:`degrade_indexed`, where image ``i``'s
  parameters and noise come from its own generator seeded by ``(seed, i)``, so the degraded copy of
  an image does not depend on the batch it is in and the benchmark is reproducible.

Written by hand on purpose, like :mod:`agekit.data.batch_augment`: on a (64,3,128,128) batch, 1 thread,
kornia 0.9 (PyPI) measured RandomJPEG 324 ms (a differentiable DCT in float), RandomGaussianBlur 54 ms,
RandomGaussianNoise 38 ms and ColorJiggle 186 ms of CPU time (all images, p=1) -- ~0.6 s against
36 ms for this module at p=0.5 (71 ms at p=1; benchmarks/degrade_speed.py) -- and it has no
sepia/fade or per-sample down-up scale. So kornia is not a dependency. Here: per-sample blur is one grouped separable
conv over the chosen images with one Gaussian kernel each; down-up scale groups the chosen images by
target size (multiples of 4 px); JPEG is OpenCV's codec per image (~0.2 ms at 128 px).

Parameters are drawn on the CPU (a few scalars per image) and every tensor that meets the batch is
made on the batch's device, so a CUDA batch stays on the GPU except for the JPEG round trip; on the
``meta`` device (used by the tests to catch device mix-ups) the codec step is skipped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["OldPhotoDegrade", "OldPhotoRecipe", "degrade_indexed", "DEGRADATIONS", "jpeg_roundtrip"]


@dataclass(frozen=True)
class OldPhotoRecipe:
    """Each operation's probability and parameter range (sizes in pixels at the crop's resolution,
    scaled by ``H / 128`` for other input sizes; intensities on the 0-255 scale)."""

    colour_p: float = 0.8                      # one of greyscale / faded / sepia, equally likely
    fade_saturation: tuple[float, float] = (0.2, 0.6)
    fade_contrast: tuple[float, float] = (0.5, 0.8)
    fade_lift: tuple[float, float] = (150.0, 220.0)  # the level the contrast shrinks towards (raised blacks)
    fade_warm: tuple[float, float] = (0.0, 0.12)     # +t red, -t blue (yellowed print)
    sepia_strength: tuple[float, float] = (0.6, 1.0)
    sepia_contrast: tuple[float, float] = (0.7, 1.0)
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.5, 1.8)     # px at 128
    rescale_p: float = 0.5
    rescale_factor: tuple[float, float] = (0.25, 0.6)  # down to 32-77 px at 128, then back up (bilinear)
    noise_p: float = 0.5                             # sensor (per channel) or film grain (mono, clumped), equally likely
    noise_sigma: tuple[float, float] = (3.0, 12.0)
    jpeg_p: float = 0.6
    jpeg_quality: tuple[int, int] = (15, 60)         # inclusive


DEGRADATIONS = {"old-photo": OldPhotoRecipe()}

# the columns of the per-image uniform draws (one row per image)
_COLS = ["apply", "colour", "mode", "sat", "con", "lift", "warm", "sep", "sepcon", "blur", "sigma",
         "rescale", "factor", "noise", "ntype", "nsigma", "jpeg", "q"]
_K = len(_COLS)
_SEPIA = torch.tensor([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])


def jpeg_roundtrip(img_hwc: np.ndarray, quality: int) -> np.ndarray:
    """Encode an RGB uint8 (H,W,3) image as JPEG at ``quality`` and decode it again."""
    return np.ascontiguousarray(_jpeg_bgr(np.ascontiguousarray(img_hwc[..., ::-1]), quality)[..., ::-1])


def _lerp(u: torch.Tensor, rng: tuple[float, float]) -> torch.Tensor:
    return rng[0] + (rng[1] - rng[0]) * u


class _Draws:
    """Per-image uniforms and noise: from the global RNG (training) or one generator per image (benchmark)."""

    _bank: dict[tuple, torch.Tensor] = {}  # training noise: a fixed Gaussian bank per (device, shape)

    def __init__(self, b: int, gens: list[torch.Generator] | None) -> None:
        self.gens = gens
        self.u = torch.rand(b, _K) if gens is None else torch.stack([torch.rand(_K, generator=g) for g in gens])

    def col(self, name: str) -> torch.Tensor:
        return self.u[:, _COLS.index(name)]

    def normal(self, rows: list[int], shape: tuple[int, ...], device: torch.device, fresh: bool = False) -> torch.Tensor:
        """Unit Gaussian noise (len(rows), *shape). Benchmark: fresh from each image's generator.

        Training: ``torch.randn`` of a whole batch costs more than every other step here on one
        core, so images take a random member of a 64-image bank (drawn once), with a random sign and
        a random shift shared by the call (bank images are 16 px larger than the crop).
        """
        if self.gens is not None:
            return torch.stack([torch.randn(shape, generator=self.gens[r]) for r in rows]).to(device)
        if fresh:  # small fields (film grain at half resolution) are cheap to draw
            return torch.randn(len(rows), *shape, device=device)
        key = (str(device), shape)
        bank = self._bank.get(key)
        if bank is None:
            bank = self._bank[key] = torch.randn(64, shape[0], shape[1] + 16, shape[2] + 16, device=device)
        n, h, w = len(rows), shape[1], shape[2]
        pick = torch.randint(0, 64, (n,)).to(device)
        sign = torch.where(torch.rand(n) < 0.5, -1.0, 1.0).to(device).view(n, 1, 1, 1)
        oy, ox = (int(v) for v in torch.randint(0, 17, (2,)))
        return bank.index_select(0, pick)[:, :, oy:oy + h, ox:ox + w] * sign


def _take(x: torch.Tensor, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.tensor(rows, device=x.device)
    return idx, x.index_select(0, idx).float()


def _put(x: torch.Tensor, idx: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x.index_copy_(0, idx, y.clamp_(0, 255).round_().to(torch.uint8))


def _colour(x: torch.Tensor, d: _Draws, rows: list[int], r: OldPhotoRecipe) -> torch.Tensor:
    """Grey, faded or sepia: each is an affine colour map y = A x + b, so one batched matmul does all."""
    dev, n = x.device, len(rows)
    idx, sel = _take(x, rows)
    v = lambda name, rng: _lerp(d.col(name)[rows], rng).view(n, 1, 1)  # noqa: E731  (CPU, then moved)
    mode = (d.col("mode")[rows] * 3).long().clamp(max=2).view(n, 1, 1)  # 0 grey, 1 faded, 2 sepia
    eye = torch.eye(3).expand(n, 3, 3)
    grey = torch.tensor([0.299, 0.587, 0.114]).expand(n, 3, 3)  # every output channel = luma
    # faded: desaturated, contrast shrunk towards a raised level, warm tint (+t red, -t blue)
    sat, con, lift, warm = v("sat", r.fade_saturation), v("con", r.fade_contrast), v("lift", r.fade_lift), \
        v("warm", r.fade_warm)
    tint = torch.cat([1 + warm, torch.ones_like(warm), 1 - warm], 1)  # (n,3,1)
    a_fade = tint * con * (grey + sat * (eye - grey))
    b_fade = (tint * (1 - con) * lift).squeeze(2)
    # sepia: the classic matrix blended in, then contrast shrunk towards the image's mean level
    a_sep = eye + v("sep", r.sepia_strength) * (_SEPIA - eye)
    sc = v("sepcon", r.sepia_contrast)
    means = sel.mean(dim=(2, 3))  # (n,3) on the device; the mean level of A x is mean(A x_mean)
    b_sep = (1 - sc).view(n, 1).to(dev) * torch.einsum("nij,nj->ni", a_sep.to(dev), means).mean(1, keepdim=True)
    a_sep = sc * a_sep
    a = torch.where(mode == 0, grey, torch.where(mode == 1, a_fade, a_sep)).to(dev)
    m2 = mode.view(n, 1).to(dev)
    b = torch.where(m2 == 0, 0.0, torch.where(m2 == 1, b_fade.to(dev), b_sep.expand(n, 3)))
    h, w = sel.shape[-2:]
    y = torch.baddbmm(b.unsqueeze(2), a, sel.view(n, 3, h * w)).view(n, 3, h, w)
    return _put(x, idx, y)


def _blur(x: torch.Tensor, d: _Draws, rows: list[int], r: OldPhotoRecipe, px: float) -> torch.Tensor:
    """Gaussian blur, its own sigma per image: a grouped separable conv (one kernel per image-channel)."""
    dev, n, c = x.device, len(rows), x.shape[1]
    sigma = _lerp(d.col("sigma")[rows], r.blur_sigma) * px
    half = max(1, math.ceil(2.5 * r.blur_sigma[1] * px))
    t = torch.arange(-half, half + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t[None] / sigma[:, None]) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0).to(dev)  # (n*c, 2*half+1)
    idx, sel = _take(x, rows)
    h, w = x.shape[-2:]
    y = F.pad(sel.view(1, n * c, h, w), (half, half, half, half), mode="reflect")
    y = F.conv2d(F.conv2d(y, k.view(n * c, 1, 1, -1), groups=n * c), k.view(n * c, 1, -1, 1), groups=n * c)
    return _put(x, idx, y.view(n, c, h, w))


def _rescale(x: torch.Tensor, d: _Draws, rows: list[int], r: OldPhotoRecipe) -> torch.Tensor:
    """Down (antialiased bilinear) then up (bilinear), grouped by target size in steps of 4 px.

    Done on uint8 channels-last tensors: PyTorch's fast uint8 resize path is ~20x quicker on CPU
    than the float NCHW one here.
    """
    h, w = x.shape[-2:]
    f = _lerp(d.col("factor")[rows], r.rescale_factor)
    sizes = (torch.round(f * h / 4) * 4).clamp(min=8).long().tolist()
    for s in sorted(set(sizes)):  # one bucket per target size
        idx = torch.tensor([row for row, sz in zip(rows, sizes) if sz == s], device=x.device)
        sel = x.index_select(0, idx).contiguous(memory_format=torch.channels_last)
        if x.device.type != "cpu":  # CUDA has no uint8 (antialiased) bilinear kernel: resize in float there
            sel = sel.float()
        small = F.interpolate(sel, size=(s, max(4, round(s * w / h))), mode="bilinear", antialias=True,
                              align_corners=False)
        up = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
        x.index_copy_(0, idx, up.round().clamp(0, 255).to(x.dtype).contiguous() if up.dtype != x.dtype else up.contiguous())
    return x


def _noise(x: torch.Tensor, d: _Draws, rows: list[int], r: OldPhotoRecipe) -> torch.Tensor:
    """Sensor noise (independent per channel) or film grain (the same in every channel, clumped at 2 px)."""
    dev, n = x.device, len(rows)
    h, w = x.shape[-2:]
    sigma = _lerp(d.col("nsigma")[rows], r.noise_sigma).view(n, 1, 1, 1)
    film = d.col("ntype")[rows] < 0.5
    idx, sel = _take(x, rows)
    if not bool(film.any()):
        noise = d.normal(rows, (3, h, w), dev)
    else:
        grain = d.normal(rows, (1, (h + 1) // 2, (w + 1) // 2), dev, fresh=True)
        grain = F.interpolate(grain, size=(h, w), mode="nearest").expand(-1, 3, -1, -1)
        noise = grain if bool(film.all()) else torch.where(film.to(dev).view(n, 1, 1, 1), grain,
                                                                d.normal(rows, (3, h, w), dev))
    return _put(x, idx, sel.addcmul_(sigma.to(dev), noise))


def _jpeg(x: torch.Tensor, d: _Draws, rows: list[int], r: OldPhotoRecipe) -> torch.Tensor:
    """JPEG at its own quality per image (OpenCV's codec on the CPU; skipped on ``meta``, which has no data)."""
    if x.device.type == "meta":
        return x
    q = (r.jpeg_quality[0] + d.col("q")[rows] * (r.jpeg_quality[1] - r.jpeg_quality[0] + 1)).floor().long()
    q = q.clamp(max=r.jpeg_quality[1]).tolist()
    idx = torch.tensor(rows, device=x.device)
    bgr = x.index_select(0, idx).flip(1).permute(0, 2, 3, 1).contiguous().cpu().numpy()
    out = torch.from_numpy(np.stack([_jpeg_bgr(im, qi) for im, qi in zip(bgr, q)]))
    return x.index_copy_(0, idx, out.to(x.device).permute(0, 3, 1, 2).flip(1))


def _jpeg_bgr(img: np.ndarray, quality: int) -> np.ndarray:
    import cv2

    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def _apply(x_uint8: torch.Tensor, d: _Draws, p: float, r: OldPhotoRecipe) -> torch.Tensor:
    """Order: colour, blur, down-up scale, noise, JPEG (a print fades, is scanned soft and small, then compressed)."""
    h = x_uint8.shape[-2]
    chosen = d.col("apply") < p
    if not bool(chosen.any()):
        return x_uint8
    x = x_uint8.clone()
    px = h / 128
    for name, prob, op in (("colour", r.colour_p, lambda x, rs: _colour(x, d, rs, r)),
                           ("blur", r.blur_p, lambda x, rs: _blur(x, d, rs, r, px)),
                           ("rescale", r.rescale_p, lambda x, rs: _rescale(x, d, rs, r)),
                           ("noise", r.noise_p, lambda x, rs: _noise(x, d, rs, r)),
                           ("jpeg", r.jpeg_p, lambda x, rs: _jpeg(x, d, rs, r))):
        rs = torch.nonzero(chosen & (d.col(name) < prob)).flatten().tolist()
        if rs:
            x = op(x, rs)
    return x


class OldPhotoDegrade(torch.nn.Module):
    """Degrade a share ``p`` of a uint8 (B,3,H,W) batch, each chosen image with its own operations
    and parameters (see :class:`OldPhotoRecipe`); the rest pass through unchanged."""

    def __init__(self, p: float = 1.0, recipe: OldPhotoRecipe | None = None) -> None:
        super().__init__()
        self.p, self.recipe = float(p), recipe or OldPhotoRecipe()

    @torch.no_grad()
    def forward(self, x_uint8: torch.Tensor) -> torch.Tensor:
        if self.p <= 0 or x_uint8.shape[0] == 0:
            return x_uint8
        return _apply(x_uint8, _Draws(x_uint8.shape[0], None), self.p, self.recipe)


def _seed_for(seed: int, index: int) -> int:
    return (int(seed) * 1_000_003 + int(index) * 7_919 + 12_345) % (2**63 - 1)


@torch.no_grad()
def degrade_indexed(x_uint8: torch.Tensor, indices, seed: int = 0, recipe: str | OldPhotoRecipe = "old-photo",
                    p: float = 1.0) -> torch.Tensor:
    """The benchmark's deterministic degradation: image ``j`` of the batch uses a generator seeded by
    ``(seed, indices[j])`` (see :func:`_seed_for`), so the same image index always gets the same copy."""
    r = DEGRADATIONS[recipe] if isinstance(recipe, str) else recipe
    idx = [int(i) for i in np.asarray(indices).reshape(-1)]
    if len(idx) != x_uint8.shape[0]:
        raise ValueError(f"{len(idx)} indices for a batch of {x_uint8.shape[0]}")
    if not idx:
        return x_uint8
    gens = [torch.Generator().manual_seed(_seed_for(seed, i)) for i in idx]
    return _apply(x_uint8, _Draws(len(idx), gens), p, r)
