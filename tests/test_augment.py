"""Batched augmentations against per-sample slicing with the same random draws; the strong augmentation's
properties (per-sample, seeded, shapes and value ranges); the protocol's `--augment` stream."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssl_bench.augment import (
    _affine,
    augmentation,
    cutout,
    shift_signals,
    strong_image,
    strong_signal,
    time_mask,
    translate_images,
)


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


# --------------------------------------------------------------------------------------------------
# Strong augmentation (method views) and the protocol's --augment stream


@pytest.mark.parametrize(
    "modality, shape", [("image", (6, 3, 12, 12)), ("image", (6, 1, 8, 8)), ("signal", (6, 1, 200))]
)
@pytest.mark.parametrize("strength", ["weak", "strong"])
def test_per_sample_draws_deterministic_under_the_seed_and_shape_kept(modality, shape, strength):
    augment = augmentation(modality, strength)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    x[1:] = x[0]  # identical samples: per-sample draws must still differ
    a = augment(x, torch.Generator().manual_seed(3))
    b = augment(x, torch.Generator().manual_seed(3))
    assert a.shape == x.shape and a.dtype == x.dtype and torch.isfinite(a).all()
    assert torch.equal(a, b)  # same seed, same result
    assert not torch.equal(a, augment(x, torch.Generator().manual_seed(4)))
    assert len({tuple(s.flatten().tolist()) for s in a}) == len(a)  # every sample its own draw


def test_strong_images_stay_in_each_samples_range_and_global_rng_is_untouched():
    x = torch.randn(16, 3, 10, 10) * torch.linspace(0.1, 3, 16).view(-1, 1, 1, 1)
    state = torch.get_rng_state()
    out = strong_image(x, torch.Generator().manual_seed(1))
    assert torch.equal(torch.get_rng_state(), state)
    lo, hi = x.amin(dim=(1, 2, 3)), x.amax(dim=(1, 2, 3))
    assert (out.amin(dim=(1, 2, 3)) >= lo).all() and (out.amax(dim=(1, 2, 3)) <= hi).all()
    assert (out == 0).flatten(1).sum(
        1
    ).min() >= 27  # Cutout: a 5×5 square per image; centred in a corner, 3×3 of it × 3 channels


def test_cutout_matches_per_sample_squares():
    x = torch.randn(5, 2, 9, 7) + 10  # no zeros of its own
    gen = torch.Generator().manual_seed(2)
    state = gen.get_state()
    out = cutout(x, gen, frac=0.5)  # side ⌈0.5·7⌉ = 4
    replay = torch.Generator().set_state(state)
    cy = torch.randint(0, 9, (5, 1, 1), generator=replay)
    cx = torch.randint(0, 7, (5, 1, 1), generator=replay)
    for i in range(5):
        expected = x[i].clone()
        top, left = int(cy[i]) - 2, int(cx[i]) - 2
        expected[:, max(top, 0) : top + 4, max(left, 0) : left + 4] = 0
        assert torch.equal(out[i], expected)


def test_affine_translation_by_whole_pixels_is_a_shift():
    """Independent check of the geometric ops: a translation of exactly one pixel moves every column by one."""
    x = torch.randn(2, 1, 6, 10)
    b = x.shape[0]
    chosen = {
        op: torch.tensor([op == "translate_x"] * b)
        for op in ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
    }
    mags = {op: torch.full((b,), (2 / 10) / (0.3 * 2)) for op in chosen}  # one pixel = 2/W in normalized coordinates
    grid = F.affine_grid(_affine(chosen, mags, b, "cpu"), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    assert torch.allclose(out[..., :-1], x[..., 1:], atol=1e-5)  # output column j reads input column j + 1
    assert torch.allclose(out[..., -1], torch.zeros_like(out[..., -1]), atol=1e-5)


def test_time_mask_matches_per_sample_segments():
    x = torch.randn(4, 2, 40) + 10
    gen = torch.Generator().manual_seed(5)
    state = gen.get_state()
    out = time_mask(x, gen, max_frac=0.25)
    replay = torch.Generator().set_state(state)
    width = torch.randint(0, 11, (4, 1), generator=replay)
    start = (torch.rand((4, 1), generator=replay) * (40 - width + 1)).floor().long()
    for i in range(4):
        expected = x[i].clone()
        expected[:, start[i, 0] : start[i, 0] + width[i, 0]] = 0
        assert torch.equal(out[i], expected)


def test_strong_signal_changes_gain_and_masks():
    x = torch.randn(64, 1, 400, generator=torch.Generator().manual_seed(0))
    out = strong_signal(x, torch.Generator().manual_seed(1))
    ratio = out.std(dim=(1, 2)) / x.std(dim=(1, 2))
    assert ratio.min() < 0.8 and ratio.max() > 1.2  # gains in [0.5, 1.5] (plus noise)
    assert ((out == 0).sum(dim=(1, 2)) > 0).float().mean() > 0.9  # nearly every signal has a masked segment


def test_protocol_augment_is_the_same_for_every_method_and_fingerprinted(tmp_path):
    from ssl_bench.protocol import RunSpec, resolve
    from ssl_bench.run.training import train

    spec = lambda method, augment: RunSpec(
        method=method,
        dataset="digits",
        labels=50,
        steps=4,
        protocol={"eval_every": 4, "augment": augment},
        device="cpu",
    )
    plain = train(resolve(spec("supervised", "none")), tmp_path, show_progress=False)
    sup = train(resolve(spec("supervised", "weak")), tmp_path, show_progress=False)
    ent = train(resolve(spec("entmin", "weak")), tmp_path, show_progress=False)
    assert sup["protocol_fingerprint"] == ent["protocol_fingerprint"] != plain["protocol_fingerprint"]
    assert (
        sup["test_acc"] != plain["test_acc"] or sup["val_acc_last"] != plain["val_acc_last"]
    )  # the batches really changed


def test_the_global_batch_is_augmented_before_it_is_sliced():
    """--augment draws do not depend on the number of processes: two ranks' slices make the one-process batch."""
    from ssl_bench.augment import augment_image
    from ssl_bench.run.distributed import World
    from ssl_bench.run.streams import AugmentStream, IndexStream, next_batch

    class Data:
        x_lb, y_lb, x_ulb = torch.randn(20, 1, 6, 6), torch.arange(20) % 10, torch.randn(40, 1, 6, 6)
        inputs = staticmethod(lambda x: x)

    def streams():
        return {
            "labeled": IndexStream(20, 8, torch.Generator().manual_seed(0), torch.device("cpu")),
            "unlabeled": IndexStream(40, 16, torch.Generator().manual_seed(1), torch.device("cpu")),
            "augment": AugmentStream(augment_image, torch.Generator().manual_seed(2)),
        }

    one = next_batch(Data, streams(), World())
    halves = [next_batch(Data, streams(), World(rank=r, size=2)) for r in (0, 1)]
    for field in ("x_lb", "y_lb", "x_ulb"):
        assert torch.equal(torch.cat([getattr(h, field) for h in halves]), getattr(one, field))
