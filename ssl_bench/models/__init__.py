"""Models: a registry of networks and a uniform view of their intermediate representations."""

from ssl_bench.models.intermediates import LayerTaps, forward_intermediates, layer_names
from ssl_bench.models.registry import ModelEntry, create_model, get_model_entry, model_names, register_model

__all__ = [
    "LayerTaps",
    "ModelEntry",
    "create_model",
    "forward_intermediates",
    "get_model_entry",
    "layer_names",
    "model_names",
    "register_model",
]
