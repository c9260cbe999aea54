"""Batched augmentations against per-sample slicing with the same random draws."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssl_bench.augment import shift_signals, translate_images


def test_translate_images_matches_per_sample_crops():
    x = torch.randn(5, 3, 6, 7)
    gen = torch.Generator().manual_seed(1)
    state = gen.get_state()
    out = translate_images(x, gen, max_shift=2)
    replay = torch.Generator().set_state(state)
    dy = torch.randint(0, 5, (5, 1), generator=replay)
    dx = torch.randint(0, 5, (5, 1), generator=replay)
    xp = F.pad(x, (2, 2, 2, 2))
    for i in range(5):
        expected = xp[i, :, dy[i, 0] : dy[i, 0] + 6, dx[i, 0] : dx[i, 0] + 7]
        assert torch.equal(out[i], expected)
    assert out.shape == x.shape


def test_shift_signals_matches_per_sample_slices():
    x = torch.randn(4, 2, 32)
    gen = torch.Generator().manual_seed(2)
    state = gen.get_state()
    out = shift_signals(x, gen, max_frac=1 / 8)
    replay = torch.Generator().set_state(state)
    off = torch.randint(0, 9, (4, 1), generator=replay)
    xp = F.pad(x, (4, 4))
    for i in range(4):
        assert torch.equal(out[i], xp[i, :, off[i, 0] : off[i, 0] + 32])
