"""The registries: methods (entry points, unknown / duplicate / broken plugins, an external distribution), and
datasets and models from another distribution."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
from click.testing import CliRunner

from ssl_bench.cli import cli
from ssl_bench.data.registry import BUILTIN_DATASETS, DatasetInfo, dataset_names, get_dataset, refresh_datasets
from ssl_bench.errors import UserError
from ssl_bench.method import SSLMethod, load_method, method_names
from ssl_bench.models.registry import (
    BUILTIN_MODELS,
    ModelEntry,
    create_model,
    get_model_entry,
    model_names,
    refresh_models,
)
from tests.conftest import fake_distribution

GOOD_MODULE = """
import torch.nn.functional as F
from ssl_bench import SSLMethod

class Other(SSLMethod):
    terms = ("ce",)
    def loss(self, model, batch, progress):
        ce = F.cross_entropy(model(batch.x_lb), batch.y_lb)
        return ce, {"ce": ce.detach()}
"""


def test_builtin_methods_come_from_entry_points():
    assert {"supervised", "entmin", "pimodel", "dninv"} <= set(method_names())
    cls = load_method("supervised")
    assert issubclass(cls, SSLMethod) and cls.__module__ == "ssl_bench_plugins.supervised"


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(UserError, match=r"unknown method 'nope'; known methods: .*supervised"):
        load_method("nope")


def test_duplicate_name_is_an_error(tmp_path, fresh_registry):
    fake_distribution(tmp_path / "a", "dist-a", {"twin": "mod_a:Other"}, {"mod_a": GOOD_MODULE})
    fake_distribution(tmp_path / "b", "dist-b", {"twin": "mod_b:Other"}, {"mod_b": GOOD_MODULE})
    fresh_registry.syspath_prepend(str(tmp_path / "a"))
    fresh_registry.syspath_prepend(str(tmp_path / "b"))
    from ssl_bench.method import refresh_methods

    refresh_methods()
    with pytest.raises(UserError, match=r"'twin' is registered twice: by dist-[ab].*and by dist-[ab]"):
        load_method("supervised")


def test_broken_plugin_names_its_distribution_and_spares_the_others(tmp_path, fresh_registry):
    fake_distribution(
        tmp_path,
        "broken-dist",
        {"broken": "mod_broken:Method"},
        {"mod_broken": "raise ImportError('missing dependency xyz')\n"},
    )
    fresh_registry.syspath_prepend(str(tmp_path))
    from ssl_bench.method import refresh_methods

    refresh_methods()
    assert "broken" in method_names()
    with pytest.raises(
        UserError, match=r"method 'broken' from distribution broken-dist failed to import.*missing dependency xyz"
    ):
        load_method("broken")
    assert load_method("supervised").__name__ == "Supervised"
    listing = CliRunner().invoke(cli, ["list", "methods"])
    assert listing.exit_code == 0
    assert "BROKEN" in listing.output and "supervised" in listing.output


def test_external_plugin_is_found_and_runs(example_plugin, tmp_path):
    assert "softpl" in method_names()
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="ssl_bench.methods") if e.name == "softpl"]
    assert ep.dist.name == "ssl-bench-example-plugin"
    result = CliRunner().invoke(
        cli,
        [
            "run",
            "--method",
            "softpl",
            "--dataset",
            "digits",
            "--labels",
            "50",
            "--steps",
            "30",
            "--eval-every",
            "10",
            "--out",
            str(tmp_path),
            "--quiet",
            "-p",
            "T=0.4",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "softpl on digits" in result.output


# --------------------------------------------------------------------------------------------------
# Datasets and models from another distribution (entry-point groups ssl_bench.datasets, ssl_bench.models)

DATASET_MODULE = """
import torch
from ssl_bench.data import DataArrays, DatasetInfo


def load(data_dir=None, download=True, **options):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(400) % 2
    x = torch.rand(400, 1, 8, 8, generator=g) + y.view(-1, 1, 1, 1)
    return DataArrays(x[:300], y[:300], x[300:], y[300:])


TWOBLOBS = DatasetInfo(
    name="twoblobs", modality="image", shape=(1, 8, 8), num_classes=2, val_size=50,
    default_model="tinycnn", default_steps=20, description="two blobs, a third-party dataset", load=load,
)
NOT_A_DATASET = {"name": "notone"}
"""

MODEL_MODULE = '''
from torch import nn
from ssl_bench.models import register_model


@register_model(modalities=("image",), lr=3e-3)
def flatnet(*, num_classes: int, input_shape: tuple[int, ...]):
    """A linear classifier, a third-party model."""
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes))
'''


@pytest.fixture
def install(tmp_path, monkeypatch):
    """`install(group, entry_points, modules)`: a distribution of datasets or models, for one test."""
    root = tmp_path / "site"

    def install_(group: str, eps: dict[str, str], modules: dict[str, str]) -> None:
        fake_distribution(root, "ssl-bench-extras", eps, modules, group=group)
        monkeypatch.syspath_prepend(str(root))
        refresh_datasets()
        refresh_models()

    yield install_
    monkeypatch.undo()
    for name in ("extras_data", "extras_models"):
        sys.modules.pop(name, None)
    refresh_datasets()
    refresh_models()


def test_third_party_dataset_is_found_and_runs(install, tmp_path):
    install("ssl_bench.datasets", {"twoblobs": "extras_data:TWOBLOBS"}, {"extras_data": DATASET_MODULE})
    assert "twoblobs" in dataset_names() and "digits" in dataset_names()
    assert "extras_data" not in sys.modules  # listed without importing it
    assert get_dataset("twoblobs") is sys.modules["extras_data"].TWOBLOBS
    listing = CliRunner().invoke(cli, ["list", "datasets"])
    assert listing.exit_code == 0 and "two blobs, a third-party dataset" in listing.output
    args = ["run", "--method", "supervised", "--dataset", "twoblobs", "--labels", "20", "--steps", "10"]
    result = CliRunner().invoke(cli, [*args, "--eval-every", "10", "--out", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "supervised on twoblobs" in result.output


def test_third_party_model_is_found_and_runs(install, tmp_path):
    install("ssl_bench.models", {"flatnet": "extras_models:flatnet"}, {"extras_models": MODEL_MODULE})
    assert "flatnet" in model_names() and "tinycnn" in model_names()
    assert "extras_models" not in sys.modules  # listed without importing it
    entry = get_model_entry("flatnet")
    assert (entry.lr, entry.modalities) == (3e-3, ("image",))
    assert entry.description == "A linear classifier, a third-party model."
    assert create_model("flatnet", num_classes=10, input_shape=(1, 8, 8))(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(UserError, match="model 'flatnet' takes image inputs, not signal inputs"):
        create_model("flatnet", num_classes=10, input_shape=(1, 64))
    args = ["run", "--method", "supervised", "--dataset", "digits", "--model", "flatnet", "--labels", "50"]
    result = CliRunner().invoke(cli, [*args, "--steps", "10", "--eval-every", "10", "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "group, eps, message",
    [
        (
            "ssl_bench.datasets",
            {"digits": "extras_data:TWOBLOBS"},
            r"dataset 'digits' is registered twice: by ssl-bench \(ssl_bench.data.digits:DIGITS\) and by ssl-bench-ex",
        ),
        (
            "ssl_bench.datasets",
            {"notone": "extras_data:NOT_A_DATASET"},
            r"dataset 'notone' from ssl-bench-extras \(extras_data:NOT_A_DATASET\) is not a ssl_bench.data.DatasetInfo",
        ),
        (
            "ssl_bench.datasets",
            {"blobs": "extras_data:TWOBLOBS"},
            r"dataset 'blobs' from ssl-bench-extras \(extras_data:TWOBLOBS\) is named 'twoblobs'",
        ),
        (
            "ssl_bench.datasets",
            {"gone": "extras_missing:X"},
            r"dataset 'gone' from distribution ssl-bench-extras failed to import \(extras_missing:X\): ModuleNotFound",
        ),
        (
            "ssl_bench.models",
            {"tinycnn": "extras_models:flatnet"},
            r"model 'tinycnn' is registered twice: by ssl-bench \(ssl_bench.models.tiny:tinycnn\) and by ssl-bench-ex",
        ),
        (
            "ssl_bench.models",
            {"linear": "extras_models:flatnet"},
            r"model 'linear' from ssl-bench-extras \(extras_models:flatnet\) is neither a ModelEntry named 'linear'",
        ),
    ],
)
def test_bad_third_party_dataset_or_model_names_its_distribution(install, group, eps, message):
    install(group, eps, {"extras_data": DATASET_MODULE, "extras_models": MODEL_MODULE})
    name = next(iter(eps))
    with pytest.raises(UserError, match=message):
        get_dataset(name) if group == "ssl_bench.datasets" else get_model_entry(name)
    if "registered twice" not in message:  # a broken entry is listed as such; the others still show
        what = "datasets" if group == "ssl_bench.datasets" else "models"
        listing = CliRunner().invoke(cli, ["list", what])
        assert listing.exit_code == 0, listing.output
        assert "BROKEN" in listing.output and "ssl-bench-extras" in listing.output and "digits" in listing.output


def test_builtin_tables_list_every_builtin_dataset_and_model():
    """A dataset or model added to a built-in module but not to its registry's table would go unlisted."""
    datasets = {
        info.name
        for module in {v.partition(":")[0] for v in BUILTIN_DATASETS.values()}
        for info in vars(importlib.import_module(module)).values()
        if isinstance(info, DatasetInfo)
    }
    assert datasets == set(BUILTIN_DATASETS)
    models = {
        fn.model_entry.name
        for module in {v.partition(":")[0] for v in BUILTIN_MODELS.values()}
        for fn in vars(importlib.import_module(module)).values()
        if isinstance(getattr(fn, "model_entry", None), ModelEntry)
    }
    assert models == set(BUILTIN_MODELS)
    assert all(get_dataset(name).name == name for name in BUILTIN_DATASETS)
    assert all(get_model_entry(name).name == name for name in BUILTIN_MODELS)
