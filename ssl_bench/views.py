"""The views a method declares (`SSLMethod.views`) and its other random tensors (`SSLMethod.random_tensors`),
made by the harness for every step, outside the (compiled) step.

A method names the augmented copies of the batch it needs (e.g. FixMatch: the unlabeled batch weakly and
strongly augmented; MixMatch: K weak draws; Π-model: two weak draws of the whole batch); `make_views`
makes them batched on the device, drawing from the method's own generator (so the protocol's streams, and
hence every other method's batches, are not disturbed), and returns the batch with `views` filled; then
`random` with the method's random tensors, drawn from the same generator after the views. The loop calls
it without knowing the method.
"""

from __future__ import annotations

import dataclasses

import torch

from ssl_bench.augment import augmentation
from ssl_bench.method import Batch, SSLMethod, View


def make_views(method: SSLMethod, batch: Batch, modality: str) -> Batch:
    """`batch` with `views` = the method's declared views, drawn in the order declared, and `random` = its
    random tensors, drawn after them."""
    specs = method.views()
    if specs:
        gen = method.context.generator
        batch = dataclasses.replace(
            batch, views={name: draw(spec, batch, modality, gen) for name, spec in specs.items()}
        )
    random = method.random_tensors(batch)
    return dataclasses.replace(batch, random=random) if random else batch


def draw(spec: View, batch: Batch, modality: str, gen: torch.Generator) -> torch.Tensor:
    augment = augmentation(modality, spec.strength)
    x = torch.cat([batch.x_lb, batch.x_ulb]) if spec.source == "x" else getattr(batch, spec.source)
    if spec.draws == 1:
        return augment(x, gen)
    return torch.stack([augment(x, gen) for _ in range(spec.draws)])  # (K, B, *shape)
