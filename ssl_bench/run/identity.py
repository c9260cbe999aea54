"""A run's identity: the fingerprints recorded in result.json and what they cover.

The split and init fingerprints hash the drawn split and the initial weights; the protocol fingerprint
hashes what every method of a comparison shares for a seed (`protocol_components`), so that reports
group runs by it (docs/reports.md) and a saved state is resumed only by its own run (docs/runs.md,
ssl_bench.run.runstate.check). Changing what these hash orphans recorded run folders
(tests/test_fingerprint_pins.py).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ssl_bench import records
from ssl_bench.config import to_jsonable
from ssl_bench.data import Split
from ssl_bench.protocol import Resolved, protocol_fields


def run_identity(resolved: Resolved, split: Split, model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """The run's fingerprints (recorded in result.json), the protocol they cover, the method and its
    config: a state.pt must have been saved with the same to be resumed (ssl_bench.run.runstate.check).
    `model` is the initial model."""
    split_fp, init_fp = split.fingerprint(resolved.info.name), records.state_fingerprint(model.state_dict())
    protocol = protocol_components(resolved, input_shape, split_fp, init_fp)
    fingerprints = {
        "split_fingerprint": split_fp,
        "init_fingerprint": init_fp,
        "protocol_fingerprint": records.fingerprint(protocol),
    }
    return {
        **fingerprints,
        "protocol": protocol,
        "method": resolved.spec.method,
        "params": to_jsonable(resolved.method_config),
    }


def protocol_components(
    resolved: Resolved, input_shape: tuple[int, ...], split_fp: str, init_fp: str
) -> dict[str, Any]:
    """What every method of a comparison shares for this seed (not the method): the protocol fingerprint's input."""
    return {
        "dataset": resolved.info.name,
        "dataset_options": resolved.spec.dataset_options,
        "input_shape": input_shape,
        "split": split_fp,
        "model": resolved.model,
        "model_options": resolved.spec.model_options,
        "init": init_fp,
        "optimizer": "adam",
        "device_type": resolved.device.type,  # batch permutations are drawn on the device: CPU and CUDA streams differ
        "protocol": protocol_fields(resolved.protocol, resolved.device),
        **(
            {"world_size": resolved.world_size} if resolved.world_size > 1 else {}
        ),  # one process: as before processes counted
    }
