"""Topologies: parameter counts (docs/design.md §3), reference forwards written from the layer tables, the contract
(forward, backward, dninv double backward, named layers) over every model, bird10net's shapes, timm, and
the user errors."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from ssl_bench.catalog import model_rows
from ssl_bench.cli import cli
from ssl_bench.errors import UserError
from ssl_bench.models import create_model, forward_intermediates, layer_names, model_names

IMAGE = (2, 14, 14)  # tiny image input for every image model (largecnn needs at least 14×14)
SIGNAL = (1, 4608)  # the shortest signal bird10net takes with the paper's kernel 1024 / stride 512
SHAPES = {"image": IMAGE, "signal": SIGNAL}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv(c_in: int, c_out: int, k: int) -> int:
    """Parameters of a k×k conv (or a dense layer when k = 1) with bias."""
    return c_in * c_out * k * k + c_out


def conv1d(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k + c_out


def unit(c_in: int, c_out: int) -> int:
    """A residual unit: conv3×3 + conv1×1."""
    return conv(c_in, c_out, 3) + conv(c_in, c_out, 1)


# --------------------------------------------------------------------------------------------------
# Parameter counts


@pytest.mark.parametrize(
    "name, shape, expected",
    [
        ("smallcnn", (1, 28, 28), 131_402),  # MNIST, docs/design.md §3
        ("largecnn", (3, 32, 32), 1_369_738),  # CIFAR-10
        ("resnet2_32", (1, 28, 28), 330_186),  # MNIST
        ("resnet3_16", (1, 28, 28), 137_162),  # MNIST
        # U variants (our interpretation): every layer after a U sees twice the channels
        (
            "smallucnn",
            (1, 28, 28),
            conv(1, 32, 5) + conv(64, 64, 3) + conv(128, 64, 3) + conv(128, 128, 3) + conv(256, 10, 1),
        ),
        (
            "uresnet3_16",
            (1, 28, 28),
            conv(1, 16, 3)
            + 3 * unit(32, 16)
            + unit(32, 32)
            + 2 * unit(64, 32)
            + unit(64, 64)
            + 2 * unit(128, 64)
            + conv(128, 10, 1),
        ),
        # 44.1 kHz × 500 ms = 22,050 samples: 42 × 9 values reach the first dense layer
        ("bird10net", (1, 22050), conv1d(1, 42, 1024) + conv1d(42, 42, 3) + conv(42 * 9, 32, 1) + conv(32, 10, 1)),
    ],
)
def test_parameter_counts(name, shape, expected):
    assert n_params(create_model(name, num_classes=10, input_shape=shape)) == expected


def test_bird10net_has_about_60_8k_parameters_at_44_1_khz():
    assert n_params(create_model("bird10net", num_classes=10, input_shape=(1, 22050))) == 60_842


def test_paper_models_have_no_batchnorm_and_timm_resnet_has():
    has_bn = lambda m: any(isinstance(x, nn.modules.batchnorm._BatchNorm) for x in m.modules())
    for name in model_names():
        model = create_model(name, num_classes=10, input_shape=SIGNAL if name == "bird10net" else IMAGE)
        assert not has_bn(model), name
    assert has_bn(create_model("timm:resnet18", num_classes=10, input_shape=IMAGE))


# --------------------------------------------------------------------------------------------------
# Reference forwards, written from docs/design.md §3's tables with torch.nn.functional and the model's weights


def u(z):
    return torch.cat([F.relu(z), -F.relu(-z)], dim=1)


ACTS = {"relu": F.relu, "leaky_relu": lambda z: F.leaky_relu(z, 0.1), "sigmoid": torch.sigmoid, "u": u}
POOLS = {"mean": lambda z: F.avg_pool2d(z, 2), "max": lambda z: F.max_pool2d(z, 2)}
# (kernel, padding) per conv in forward order, "P" a 2×2 pool; the last conv (1×1) gives the class maps
CONV_SMALL = [(5, 4), "P", (3, 0), (3, 2), "P", (3, 0), (1, 0)]
CONV_LARGE = [(3, 0), (3, 2), (3, 2), "P", (3, 0), (3, 2), (3, 0), "P", (3, 0), (1, 0), (1, 0)]


def cnn_reference(model, x, table, pool, act):
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == sum(1 for layer in table if layer != "P")
    it = iter(convs)
    for i, layer in enumerate(table):
        if layer == "P":
            x = POOLS[pool](x)
            continue
        c = next(it)
        assert c.kernel_size == (layer[0],) * 2
        x = F.conv2d(x, c.weight, c.bias, padding=layer[1])
        if i < len(table) - 1:
            x = ACTS[act](x)
    return x.mean(dim=(2, 3))


def resnet_reference(model, x, depth, pool, act):
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    stem, units = convs[0], convs[1:]
    assert len(units) == 2 * 3 * depth
    h = ACTS[act](F.conv2d(x, stem.weight, stem.bias, padding=1))
    for s in range(3):
        for d in range(depth):
            c3, c1 = units[2 * (s * depth + d)], units[2 * (s * depth + d) + 1]
            h = ACTS[act](F.conv2d(h, c3.weight, c3.bias, padding=1) + F.conv2d(h, c1.weight, c1.bias))
        if s < 2:
            h = POOLS[pool](h)
    dense = [m for m in model.modules() if isinstance(m, nn.Linear)][0]
    return F.linear(h.mean(dim=(2, 3)), dense.weight, dense.bias)


@pytest.mark.parametrize(
    "name, options, act",
    [
        ("smallcnn", {}, "relu"),
        ("smallcnn", {"pool": "max", "act": "sigmoid"}, "sigmoid"),
        ("smallucnn", {"pool": "max"}, "u"),
        ("largecnn", {"act": "leaky_relu"}, "leaky_relu"),
        ("largeucnn", {}, "u"),
    ],
)
def test_cnns_match_the_layer_table(name, options, act):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, input_shape=(3, 18, 18), **options)
    x = torch.randn(2, 3, 18, 18)
    table = CONV_SMALL if name.startswith("small") else CONV_LARGE
    expected = cnn_reference(model, x, table, options.get("pool", "mean"), act)
    torch.testing.assert_close(model(x), expected)


@pytest.mark.parametrize(
    "name, depth, options, act",
    [
        ("resnet2_32", 2, {"pool": "max"}, "relu"),
        ("resnet3_16", 3, {"act": "sigmoid"}, "sigmoid"),
        ("uresnet3_16", 3, {}, "u"),
        ("uresnet2_32", 2, {"pool": "max"}, "u"),
    ],
)
def test_resnets_match_the_layer_table(name, depth, options, act):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, input_shape=(1, 12, 12), **options)
    x = torch.randn(2, 1, 12, 12)
    torch.testing.assert_close(model(x), resnet_reference(model, x, depth, options.get("pool", "mean"), act))


def test_digits_sized_inputs():
    """8×8 digits: SmallCNN and the ResNets take them; Conv-Large's valid convolutions need 14×14."""
    for name in ("smallcnn", "smallucnn", "resnet2_32", "resnet3_16", "uresnet2_32", "uresnet3_16"):
        assert create_model(name, num_classes=10, input_shape=(1, 8, 8))(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    for name in ("largecnn", "largeucnn"):
        with pytest.raises(UserError, match=f"model '{name}': needs inputs of at least 14×14 pixels, got 8×8"):
            create_model(name, num_classes=10, input_shape=(1, 8, 8))
        create_model(name, num_classes=10, input_shape=(1, 14, 14))(torch.randn(2, 1, 14, 14))


# --------------------------------------------------------------------------------------------------
# The contract over every model (and timm:resnet18): forward, backward, dninv double backward


def contract_cases():
    from ssl_bench.models import get_model_entry

    cases = [(name, kind) for name in model_names() for kind in get_model_entry(name).modalities]
    return cases + [("timm:resnet18", "image")]


@pytest.mark.parametrize("name, kind", contract_cases())
def test_forward_backward_and_dninv_double_backward(name, kind):
    torch.manual_seed(0)
    shape = SHAPES[kind]
    model = create_model(name, num_classes=5, input_shape=shape, modality=kind)
    x = torch.randn(2, *shape, requires_grad=True)
    f = model(x)
    assert f.shape == (2, 5)

    F.cross_entropy(f, torch.tensor([0, 4])).backward(retain_graph=True)
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    model.zero_grad()

    xhat = torch.autograd.grad(0.5 * (f**2).sum(), x, create_graph=True)[0]  # (∂f/∂x)ᵀ f
    assert xhat.shape == x.shape
    ((xhat - x) ** 2).mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), [
        n for n, g in grads.items() if g is None
    ]
    assert sum(g.abs().sum() for g in grads.values()) > 0


@pytest.mark.parametrize("name, kind", contract_cases())
def test_named_layers_are_captured_in_the_graph_and_not_modified_in_place(name, kind):
    torch.manual_seed(0)
    shape = SHAPES[kind]
    model = create_model(name, num_classes=5, input_shape=shape, modality=kind).eval()
    names = layer_names(model)
    assert len(names) >= 3
    modules = dict(model.named_modules())
    clones = {}  # what each named layer output at the time it was produced
    hooks = [
        modules[n].register_forward_hook(lambda _m, _i, out, n=n: clones.__setitem__(n, out.detach().clone()))
        for n in names
    ]
    x = torch.randn(2, *shape)
    logits, feats = forward_intermediates(model, x, names)
    for h in hooks:
        h.remove()
    torch.testing.assert_close(logits, model(x))
    assert list(feats) == list(names)
    for n in names:
        torch.testing.assert_close(feats[n], clones[n], msg=f"{n} was modified after it was captured")
        (g,) = torch.autograd.grad(logits.sum(), feats[n], retain_graph=True)
        assert g.shape == feats[n].shape


def test_named_layer_shapes_of_smallcnn_on_mnist():
    model = create_model("smallcnn", num_classes=10, input_shape=(1, 28, 28))
    _, feats = forward_intermediates(model, torch.randn(2, 1, 28, 28), layer_names(model))
    # 28 +8-4 = 32, pool 16, valid 14, full 16, pool 8, valid 6
    assert {n: tuple(z.shape[1:]) for n, z in feats.items()} == {
        "conv1": (32, 32, 32),
        "conv2": (64, 14, 14),
        "conv3": (64, 16, 16),
        "conv4": (128, 6, 6),
    }


# --------------------------------------------------------------------------------------------------
# bird10net at several sample rates (500 ms windows)


@pytest.mark.parametrize(
    "rate, kernel, stride, conv1, pool1, conv2",
    [
        # L = rate / 2; conv1 = (L − kernel) // stride + 1; pool1 = (conv1 − 4) // 2 + 1; conv2 = (pool1 − 3) // 2 + 1
        (4_000, None, None, 42, 20, 9),  # kernel/stride: the paper's 23.2 ms / 11.6 ms of the window, 93 / 46 samples
        (16_000, None, None, 42, 20, 9),  # 372 / 186
        (44_100, None, None, 42, 20, 9),  # 1024 / 512, the paper's
        (16_000, 1024, 512, 14, 6, 2),  # the paper's samples at other rates: shorter feature maps
        (22_050, 1024, 512, 20, 9, 4),
    ],
)
def test_bird10net_shapes(rate, kernel, stride, conv1, pool1, conv2):
    length = rate // 2
    options = {} if kernel is None else {"kernel": kernel, "stride": stride}
    model = create_model("bird10net", num_classes=10, input_shape=(1, length), **options)
    logits, feats = forward_intermediates(model, torch.randn(2, 1, length), ("conv1", "pool1", "conv2", "fc1"))
    assert [tuple(feats[n].shape) for n in ("conv1", "pool1", "conv2", "fc1")] == [
        (2, 42, conv1),
        (2, 42, pool1),
        (2, 42, conv2),
        (2, 32),
    ]
    assert model.fc1[0].in_features == 42 * conv2 and logits.shape == (2, 10)


def test_bird10net_kernel_and_stride_are_the_papers_share_of_the_window():
    for length, kernel, stride in ((22_050, 1024, 512), (2_000, 93, 46), (8_000, 372, 186), (1_000, 46, 23)):
        conv = create_model("bird10net", num_classes=10, input_shape=(1, length)).conv1[0]
        assert (conv.kernel_size, conv.stride) == ((kernel,), (stride,)), length
    conv = create_model("bird10net", num_classes=10, input_shape=(1, 2000), kernel=96, stride=48).conv1[0]
    assert (conv.kernel_size, conv.stride) == ((96,), (48,))  # samples when given


def test_bird10net_too_short_and_options():
    with pytest.raises(UserError, match="at least 4608 samples, got 4607"):
        create_model("bird10net", num_classes=10, input_shape=(1, 4607), kernel=1024, stride=512)
    with pytest.raises(UserError, match="at least 8 samples, got 7"):  # derived: kernel 1, stride 1
        create_model("bird10net", num_classes=10, input_shape=(1, 7))
    small = create_model("bird10net", num_classes=10, input_shape=(1, 40), kernel=4, stride=2)  # 40 ≥ 4 + 7·2
    assert small(torch.randn(2, 1, 40)).shape == (2, 10)


# --------------------------------------------------------------------------------------------------
# timm


def test_timm_small_input_on_resnet():
    x = torch.randn(2, 3, 32, 32)
    for small, side in ((False, 8), (True, 32)):  # layer1 is at stride 4 normally, stride 1 with small_input
        model = create_model("timm:resnet18", num_classes=10, input_shape=(3, 32, 32), small_input=small).eval()
        with torch.no_grad():
            logits, feats = forward_intermediates(model, x, ("layer1",))
        assert feats["layer1"].shape[-2:] == (side, side) and logits.shape == (2, 10)
    deep = create_model("timm:resnet10t", num_classes=10, input_shape=(1, 28, 28), small_input=True)  # deep stem
    assert isinstance(deep.maxpool, nn.Identity) and deep.conv1[0].stride == (1, 1)


def test_timm_small_input_on_mobilenet_and_refused_elsewhere():
    model = create_model("timm:mobilenetv3_small_050", num_classes=10, input_shape=(1, 32, 32), small_input=True)
    assert model.conv_stem.stride == (1, 1) and model.conv_stem.in_channels == 1
    with pytest.raises(
        UserError,
        match="small_input supports timm ResNet, EfficientNet and MobileNetV3 models, not vit_tiny_patch16_224",
    ):
        create_model("timm:vit_tiny_patch16_224", num_classes=10, input_shape=(3, 32, 32), small_input=True)


def test_timm_models_get_the_dataset_image_size():
    model = create_model("timm:vit_tiny_patch16_224", num_classes=7, input_shape=(1, 32, 32))
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 7)


def test_unknown_timm_model():
    with pytest.raises(
        UserError, match=r"unknown timm model 'resnet1888'; close matches: .*resnet18.*timm.list_models"
    ):
        create_model("timm:resnet1888", num_classes=10, input_shape=IMAGE)


# --------------------------------------------------------------------------------------------------
# User errors


@pytest.mark.parametrize(
    "name, shape, options, message",
    [
        ("bird10net", (1, 28, 28), {}, "model 'bird10net' takes signal inputs, not image"),
        ("smallcnn", (1, 40), {}, "model 'smallcnn' takes image inputs, not signal"),
        ("timm:resnet18", (1, 40), {}, "model 'timm:resnet18' takes image inputs, not signal"),
        ("smallcnn", IMAGE, {"pool": "avg"}, "pool must be one of mean, max, got 'avg'"),
        ("resnet2_32", IMAGE, {"act": "tanh"}, "act must be one of relu, leaky_relu, sigmoid, got 'tanh'"),
        ("smallucnn", IMAGE, {"act": "relu"}, "unknown option act; valid options: pool, dropout"),
        ("smallcnn", IMAGE, {"dropout": 1.5}, r"dropout must be in \[0, 1\), got 1.5"),
        ("resnet3_16", IMAGE, {"dropout": "half"}, r"dropout expects float \(a number\), got 'half'"),
        ("smallcnn", IMAGE, {"dropout": float("nan")}, "dropout must be a finite number"),
        ("bird10net", SIGNAL, {"kernel": "big"}, r"kernel expects int \(a whole number\), got 'big'"),
        ("bird10net", SIGNAL, {"stride": 0}, r"stride must be in \[1, 16777216\], got 0"),
        ("tinycnn", IMAGE, {"width": 0}, r"width must be in \[1, 1024\], got 0"),
        ("tinycnn", IMAGE, {"width": 1e9}, r"width expects int \(a whole number\), got 1000000000.0"),
        ("tinycnn", IMAGE, {"width": True}, r"width expects int \(a whole number\), got True"),
    ],
)
def test_user_errors(name, shape, options, message):
    with pytest.raises(UserError, match=message):
        create_model(name, num_classes=10, input_shape=shape, **options)


# --------------------------------------------------------------------------------------------------
# Catalog and CLI


def test_list_models_shows_counts_and_batchnorm_for_the_dataset():
    rows = {r["model"]: r for r in model_rows("digits")}  # 1×8×8: the counts of 1-channel, 10-class inputs
    assert rows["resnet2_32"]["params (digits)"] == "330,186" and rows["resnet2_32"]["batchnorm"] == "no"
    assert rows["smallcnn"]["params (digits)"] == "131,402"
    assert rows["bird10net"]["params (digits)"] == "(takes signal)"
    assert rows["largecnn"]["params (digits)"] == "(cannot take)" and "14×14" in rows["largecnn"]["description"]
    assert "timm:<name>" in rows
    out = CliRunner().invoke(cli, ["list", "models", "--dataset", "digits"]).output
    assert "137,162" in out and "uresnet3_16" in out


RUN = ["run", "--method", "supervised", "--steps", "2", "--eval-every", "1", "--batch-ulb", "8", "--quiet"]


def test_cli_runs_a_paper_model_with_options(tmp_path):
    result = CliRunner().invoke(
        cli,
        RUN
        + [
            "--labels",
            "50",
            "--dataset",
            "digits",
            "--model",
            "smallcnn",
            "-m",
            "pool=max",
            "-m",
            "act=leaky_relu",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    (run_dir,) = tmp_path.iterdir()
    record = json.loads((run_dir / "result.json").read_text())
    assert record["model"] == "smallcnn" and record["model_options"] == {"pool": "max", "act": "leaky_relu"}


def test_cli_runs_bird10net_on_synthetic_audio(tmp_path):
    # chirps at 16 kHz, 500 ms windows: 8,000 samples
    data = ["-d", "sample_rate=16000", "-d", "train_recordings=6", "-d", "test_recordings=2"]
    args = [
        "--labels",
        "all",
        "--dataset",
        "chirps",
        "--model",
        "bird10net",
        "--val-size",
        "10",
        *data,
        "--out",
        str(tmp_path),
    ]
    result = CliRunner().invoke(cli, RUN + args)
    assert result.exit_code == 0, result.output


def test_cli_refuses_a_model_that_cannot_take_the_input(tmp_path):
    result = CliRunner().invoke(
        cli, RUN + ["--labels", "50", "--dataset", "digits", "--model", "largecnn", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2 and "needs inputs of at least 14×14 pixels, got 8×8" in result.stderr
