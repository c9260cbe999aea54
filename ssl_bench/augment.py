"""Batched, on-device stochastic augmentations, chosen by the data's modality and strength (not by method).

Pure functions of `(x, generator)`: every random draw comes from the generator passed in, so a method's
augmentations draw from the method's own stream and never disturb the protocol's, and the same seed
gives the same result. Every sample draws its own parameters. Inputs are normalized (about unit
variance per channel, mean 0), so 0 is the fill value and photometric changes are in those units.

- weak (`AUGMENTATIONS`): images shifted by up to ±2 pixels plus Gaussian noise (std 0.15); signals
  shifted by up to 1/16 of their length plus the same noise.
- strong (`STRONG_AUGMENTATIONS`): images get RandAugment-style ops (Cubuk et al. 2020, arXiv 1909.13719,
  with FixMatch's random magnitudes): `STRONG_OPS_PER_SAMPLE` ops drawn per sample from
  `IMAGE_OPS` with a magnitude uniform in [0, 1] each, then Cutout (DeVries & Taylor 2017, arXiv
  1708.04552) of a square of half the image side, then each sample clipped to its own original value
  range. Signals get a shift of up to 1/8 of the length, a gain in [0.5, 1.5], noise (std 0.3) and
  time masking of up to a quarter of the length. Written here rather than taken from kornia: kornia's
  random ops draw from the global RNG, not from a generator we pass, which would break the rule above.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MAX_SHIFT_IMAGE = 2  # pixels, each direction
MAX_SHIFT_SIGNAL_FRAC = 1 / 16  # of the signal length, each direction
NOISE_STD = 0.15  # in units of the normalized input (inputs have unit variance per channel)


def translate_images(x: torch.Tensor, gen: torch.Generator, max_shift: int = MAX_SHIFT_IMAGE) -> torch.Tensor:
    """Shift each image (B, C, H, W) by its own random (dy, dx) in [-max_shift, max_shift], zero fill."""
    b, _, h, w = x.shape
    p = max_shift
    xp = F.pad(x, (p, p, p, p))  # (B, C, H+2p, W+2p)
    dy = torch.randint(0, 2 * p + 1, (b, 1), generator=gen, device=x.device)
    dx = torch.randint(0, 2 * p + 1, (b, 1), generator=gen, device=x.device)
    rows = dy + torch.arange(h, device=x.device)  # (B, H)
    cols = dx + torch.arange(w, device=x.device)  # (B, W)
    bi = torch.arange(b, device=x.device)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)


def shift_signals(x: torch.Tensor, gen: torch.Generator, max_frac: float = MAX_SHIFT_SIGNAL_FRAC) -> torch.Tensor:
    """Shift each signal (B, C, L) in time by its own random offset, zero fill."""
    b, _, length = x.shape
    p = max(1, int(length * max_frac))
    xp = F.pad(x, (p, p))  # (B, C, L+2p)
    off = torch.randint(0, 2 * p + 1, (b, 1), generator=gen, device=x.device)
    idx = (off + torch.arange(length, device=x.device)).unsqueeze(1).expand(-1, x.shape[1], -1)  # (B, C, L)
    return xp.gather(2, idx)


def add_noise(x: torch.Tensor, gen: torch.Generator, std: float = NOISE_STD) -> torch.Tensor:
    return x + std * torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)


def augment_image(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return add_noise(translate_images(x, gen), gen)


def augment_signal(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return add_noise(shift_signals(x, gen), gen)


AUGMENTATIONS = {"image": augment_image, "signal": augment_signal}  # weak

# --------------------------------------------------------------------------------------------------
# Strong

STRONG_OPS_PER_SAMPLE = 2
CUTOUT_FRAC = 0.5  # Cutout square side, as a fraction of the image's smaller side
MAX_ROTATE_DEG = 30.0
MAX_SHEAR = 0.3
MAX_TRANSLATE_FRAC = 0.3


def _uniform(b: int, gen: torch.Generator, device, low: float = -1.0, high: float = 1.0) -> torch.Tensor:
    return low + (high - low) * torch.rand(b, generator=gen, device=device)


def _per_sample(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) → broadcastable against x (B, ...)."""
    return v.view(-1, *([1] * (x.dim() - 1)))


def _brightness(x, m):  # add up to ±0.5 (units of the normalized input)
    return x + _per_sample(0.5 * m, x)


def _contrast(x, m):  # scale around each sample's mean by 1 + 0.9·m
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return mean + _per_sample(1 + 0.9 * m, x) * (x - mean)


def _sharpness(x, m):  # blend with a 3×3 box blur: factor 1 + 0.9·m (< 1 blurs, > 1 sharpens)
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return blur + _per_sample(1 + 0.9 * m, x) * (x - blur)


def _posterize(x, m):  # quantize each sample's value range to 2..16 levels (|m| → fewer levels)
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    levels = _per_sample(torch.round(16 - 14 * m.abs()), x)
    span = (hi - lo).clamp_min(1e-6)
    return lo + torch.round((x - lo) / span * (levels - 1)) / (levels - 1) * span


def _solarize(x, m):  # mirror the values above a threshold (the top |m| share of each sample's range)
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    t = hi - _per_sample(m.abs(), x) * (hi - lo)
    return torch.where(x > t, 2 * t - x, x)


PHOTOMETRIC = {
    "brightness": _brightness,
    "contrast": _contrast,
    "sharpness": _sharpness,
    "posterize": _posterize,
    "solarize": _solarize,
}
GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
IMAGE_OPS = ("identity", *PHOTOMETRIC, *GEOMETRIC)


def _affine(chosen: dict[str, torch.Tensor], mags: dict[str, torch.Tensor], b: int, device) -> torch.Tensor:
    """Per-sample affine matrices (B, 2, 3) in affine_grid's normalized coordinates, composing the
    chosen geometric ops (a sample without one keeps the identity)."""
    theta = torch.eye(3, device=device).repeat(b, 1, 1)
    for op in GEOMETRIC:
        m = torch.where(chosen[op], mags[op], torch.zeros_like(mags[op]))  # (B,) 0 = identity
        t = torch.eye(3, device=device).repeat(b, 1, 1)
        if op == "rotate":
            a = m * math.radians(MAX_ROTATE_DEG)
            t[:, 0, 0], t[:, 0, 1], t[:, 1, 0], t[:, 1, 1] = a.cos(), -a.sin(), a.sin(), a.cos()
        elif op == "shear_x":
            t[:, 0, 1] = m * MAX_SHEAR
        elif op == "shear_y":
            t[:, 1, 0] = m * MAX_SHEAR
        elif op == "translate_x":
            t[:, 0, 2] = m * MAX_TRANSLATE_FRAC * 2  # normalized coordinates span 2
        else:
            t[:, 1, 2] = m * MAX_TRANSLATE_FRAC * 2
        theta = t @ theta
    return theta[:, :2]


def cutout(x: torch.Tensor, gen: torch.Generator, frac: float = CUTOUT_FRAC) -> torch.Tensor:
    """Zero one square of side ⌈frac·min(H, W)⌉ per image, centred uniformly at random (clipped at the borders)."""
    b, _, h, w = x.shape
    side = max(1, math.ceil(frac * min(h, w)))
    cy = torch.randint(0, h, (b, 1, 1), generator=gen, device=x.device)
    cx = torch.randint(0, w, (b, 1, 1), generator=gen, device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    top, left = cy - side // 2, cx - side // 2
    inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)  # (B, H, W)
    return x.masked_fill(inside.unsqueeze(1), 0.0)


def strong_image(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """RandAugment-style ops with random magnitudes, then Cutout, per sample; clipped to each sample's range."""
    b, device = x.shape[0], x.device
    picks = torch.randint(0, len(IMAGE_OPS), (b, STRONG_OPS_PER_SAMPLE), generator=gen, device=device)  # (B, N)
    chosen = {op: (picks == k).any(1) for k, op in enumerate(IMAGE_OPS)}  # (B,) each
    mags = {op: _uniform(b, gen, device) for op in IMAGE_OPS}  # (B,) each, in [-1, 1]
    out = x
    for op, fn in PHOTOMETRIC.items():
        out = torch.where(_per_sample(chosen[op], out), fn(out, mags[op]), out)
    grid = F.affine_grid(_affine(chosen, mags, b, device), list(x.shape), align_corners=False)
    out = torch.where(
        _per_sample(torch.stack([chosen[op] for op in GEOMETRIC]).any(0), out),
        F.grid_sample(out, grid, mode="bilinear", padding_mode="zeros", align_corners=False),
        out,
    )
    out = cutout(out, gen)
    lo, hi = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
    return torch.minimum(torch.maximum(out, lo), hi)


def time_mask(x: torch.Tensor, gen: torch.Generator, max_frac: float = 0.25) -> torch.Tensor:
    """Zero one segment of each signal (B, C, L), of random length up to `max_frac`·L at a random place."""
    b, _, length = x.shape
    width = torch.randint(0, max(1, int(length * max_frac)) + 1, (b, 1), generator=gen, device=x.device)
    start = (torch.rand((b, 1), generator=gen, device=x.device) * (length - width + 1)).floor()
    t = torch.arange(length, device=x.device).view(1, length)
    return x.masked_fill(((t >= start) & (t < start + width)).unsqueeze(1), 0.0)


def strong_signal(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Shift (up to 1/8 of the length), gain in [0.5, 1.5], noise (std 0.3), time masking, per sample."""
    out = shift_signals(x, gen, max_frac=1 / 8)
    gain = _uniform(x.shape[0], gen, x.device, 0.5, 1.5)
    out = add_noise(_per_sample(gain, out) * out, gen, std=2 * NOISE_STD)
    return time_mask(out, gen)


STRONG_AUGMENTATIONS = {"image": strong_image, "signal": strong_signal}


def augmentation(modality: str, strength: str):
    """The batched augmentation `(x, generator) -> x'` of a modality ("image" | "signal") and strength
    ("weak" | "strong")."""
    table = {"weak": AUGMENTATIONS, "strong": STRONG_AUGMENTATIONS}
    return table[strength][modality]
