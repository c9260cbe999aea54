"""Batched, on-device stochastic augmentations, chosen by the data's modality (not by method).

Pure functions of `(x, generator)`: every random draw comes from the generator passed in, so a method's
augmentations draw from the method's own stream and never disturb the protocol's.
"""

from __future__ import annotations

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


AUGMENTATIONS = {"image": augment_image, "signal": augment_signal}


def augmentation(modality: str, strength: str):
    """The batched augmentation `(x, generator) -> x'` of a modality ("image" | "signal") and strength
    ("weak" | "strong")."""
    table = {"weak": AUGMENTATIONS, "strong": STRONG_AUGMENTATIONS}
    return table[strength][modality]
