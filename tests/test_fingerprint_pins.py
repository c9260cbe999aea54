"""Existing protocols keep their fingerprints (issue 26): run ids and protocol fingerprints of a few
specs, pinned as they were before the protocol was defined once. A refactor that changes any of them
would orphan every recorded run folder (sweeps resume on the run id) and split reports' groups."""

import pytest
import torch

from ssl_bench import records
from ssl_bench.protocol import RunSpec, resolve
from ssl_bench.run.identity import protocol_components

SPECS = {
    "digits-defaults": RunSpec(method="dninv", dataset="digits", labels=50, device="cpu"),
    "smallcnn-28": RunSpec(
        method="supervised",
        dataset="digits",
        labels=50,
        model="smallcnn",
        seed=3,
        dataset_options={"size": 28},
        device="cpu",
    ),
    "protocol-overrides": RunSpec(
        method="fixmatch",
        dataset="digits",
        labels=100,
        steps=300,
        lr=0.003,
        params={"threshold": 0.9},
        protocol={
            "batch_lb": 16,
            "lr_schedule": "constant",
            "augment": "weak",
            "precision": "bf16",
            "weight_decay": 0.0005,
        },
        device="cpu",
    ),
}


def _pins(spec: RunSpec) -> tuple[str, str]:
    resolved = resolve(spec)
    components = protocol_components(resolved, (1, 8, 8), "split-fp", "init-fp")
    return resolved.run_id(), records.fingerprint(components)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_existing_fingerprints_do_not_move(name):
    assert _pins(SPECS[name]) == PINNED[name]


def test_the_pins_cover_the_cuda_variant_of_the_protocol():
    # cpu_threads leaves the fingerprint on a GPU: the device type is part of what is pinned
    resolved = resolve(SPECS["digits-defaults"])
    cuda = records.fingerprint(
        protocol_components(
            type(resolved)(**{**resolved.__dict__, "device": torch.device("cuda")}), (1, 8, 8), "split-fp", "init-fp"
        )
    )
    assert cuda == PINNED_CUDA


PINNED = {
    "digits-defaults": ("digits-50-tinycnn-dninv-s0-522352bb", "311b2a25f834d237"),
    "protocol-overrides": ("digits-100-tinycnn-fixmatch-s0-a0976d64", "9269ef5ae06edb59"),
    "smallcnn-28": ("digits-50-smallcnn-supervised-s3-d6f6b812", "1be41cb357ae32a8"),
}
PINNED_CUDA = "0b08a57c915ebf14"
