"""dninv inside USB (`semilearn`, the `usb` extra): one loss, two harnesses (ssl_bench/usb.py, docs/usb.md).

CI installs the extra (Makefile); a missing `semilearn` is an import error here, not a skip.
- the USB algorithm's loss and gradients on a fixed batch equal ssl-bench's `dninv` (the class the harness
  loads) on the same batch and weights, and its loss equals an explicit-Jacobian computation;
- USB's arguments parse as `ssl-bench run -p` parses them, and bad ones are refused before training;
- USB's own training loop (`AlgorithmBase.train` and its hooks) trains dninv on CPU on an in-memory dataset;
- the shipped config examples/usb/dninv_cifar10_40_0.yaml trains through `python -m ssl_bench.usb` (fake CIFAR-10).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import semilearn.datasets.utils
import torch
import torch.nn.functional as F
import torchvision
from semilearn import BasicDataset, get_algorithm, get_config, get_data_loader
from semilearn.core.utils import ALGORITHMS
from sklearn.datasets import load_digits
from torch import nn
from torch.autograd.functional import jacobian
from torchvision import transforms

from ssl_bench import usb
from ssl_bench.config import build_config
from ssl_bench.errors import UserError
from ssl_bench.method import Batch, Progress, load_method
from tests import method_checks

pytestmark = [  # USB's own deprecations, not this project's
    pytest.mark.filterwarnings("ignore:.*GradScaler:FutureWarning", "ignore:.*GradScaler is enabled:UserWarning"),
    pytest.mark.filterwarnings("ignore:\\s*load will be removed:PendingDeprecationWarning"),
]
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "usb" / "dninv_cifar10_40_0.yaml"
K = 10  # classes


class TinyUSBNet(nn.Module):
    """A USB-style network (`forward` returns `{"logits", "feat"}`), or plain logits with `as_dict=False`."""

    def __init__(self, num_classes: int = K, in_chans: int = 1, as_dict: bool = True):
        super().__init__()
        self.as_dict = as_dict
        self.conv = nn.Conv2d(in_chans, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(4 * 4 * 4, num_classes)

    def forward(self, x, only_fc=False, only_feat=False, **kwargs):
        feat = self.pool(self.act(self.conv(x))).flatten(1)  # (B, 64) for 8×8 inputs
        logits = self.fc(feat)
        return {"logits": logits, "feat": feat} if self.as_dict else logits


def tiny_builder(num_classes, pretrained=False, pretrained_path=None, **kwargs):
    """USB's net-builder interface."""
    return TinyUSBNet(num_classes)


def usb_args(tmp_path, **overrides):
    """USB's argument namespace for dninv on an in-memory dataset (USB builds no data for an unknown name)."""
    config = {
        "algorithm": "dninv",
        "dataset": "in_memory",
        "num_classes": K,
        "num_labels": 40,
        "net": "tiny",
        "epoch": 1,
        "num_train_iter": 10,
        "num_eval_iter": 5,
        "num_log_iter": 5,
        "batch_size": 4,
        "uratio": 2,
        "eval_batch_size": 64,
        "ema_m": 0.9,
        "optim": "SGD",
        "lr": 0.03,
        "save_dir": str(tmp_path),
        "save_name": "run",
        "gpu": None,
        "distributed": False,
        "num_workers": 0,
        "seed": 0,
    }
    return get_config(config | overrides)


def build_algorithm(tmp_path, **overrides):
    torch.manual_seed(0)
    return get_algorithm(usb_args(tmp_path, **overrides), tiny_builder, tb_log=None, logger=None)


def fixed_batch(seed=0, n_lb=4, n_ulb=8):
    """A batch as USB's loaders give it: labeled dict and unlabeled dict (weak and strong views)."""
    g = torch.Generator().manual_seed(seed)
    data_lb = {
        "idx_lb": torch.arange(n_lb),
        "x_lb": torch.randn(n_lb, 1, 8, 8, generator=g),
        "y_lb": torch.randint(0, K, (n_lb,), generator=g),
    }
    x_ulb_w = torch.randn(n_ulb, 1, 8, 8, generator=g)
    data_ulb = {
        "idx_ulb": torch.arange(n_ulb),
        "x_ulb_w": x_ulb_w,
        "x_ulb_s": torch.full_like(x_ulb_w, math.nan),
    }  # dninv never reads it
    return data_lb, data_ulb


def grads(model):
    return [p.grad.clone() for p in model.parameters()]


def test_registered_in_usb_with_ssl_bench_defaults(tmp_path):
    assert ALGORITHMS["dninv"] is usb.DNInvUSB
    args = usb_args(tmp_path)
    assert (args.alpha, args.beta, args.reduction, args.detach_cotangent, args.gamma) == (
        "0.7",
        "0.2",
        "mean",
        "False",
        "none",
    )
    assert usb.dninv_config(args) == load_method("dninv").Config()


def test_usb_arguments_parse_as_the_ssl_bench_cli(tmp_path):
    text = {
        "alpha": "linear:1:0.2",
        "beta": "0.3",
        "reduction": "sum",
        "detach_cotangent": "true",
        "gamma": "conv:cosine:0.5:0",
    }
    expected = build_config(load_method("dninv").Config, text, "dninv")  # what `ssl-bench run -p key=value` builds
    assert usb.dninv_config(usb_args(tmp_path, **text)) == expected
    from_yaml = {
        "alpha": "linear:1:0.2",
        "beta": 0.3,
        "reduction": "sum",
        "detach_cotangent": True,
        "gamma": {"conv": "cosine:0.5:0"},
    }
    assert usb.dninv_config(usb_args(tmp_path, **from_yaml)) == expected


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"alpha": "1.5"}, "alpha must stay in [0, 1]"),
        ({"reduction": "max"}, "reduction must be one of mean, sum"),
        ({"gamma": "block9:0.1"}, "unknown layer 'block9'"),
        ({"ulb_loss_ratio": 2.0}, "ulb_loss_ratio must be 1.0"),
        ({"use_cat": False}, "use_cat must be True"),
        ({"dataset": "ag_news"}, "ag_news is text"),
    ],
)
def test_bad_arguments_are_refused_before_training(tmp_path, overrides, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build_algorithm(tmp_path, **overrides)


@pytest.mark.parametrize(
    "params, it",
    [
        ({}, 0),
        (
            {
                "alpha": "linear:0.9:0.3",
                "beta": "cosine:1:0.2",
                "reduction": "sum",
                "gamma": "conv:0.1,pool:linear:0:0.5",
            },
            4,
        ),
        ({"detach_cotangent": "true", "alpha": "0"}, 9),
        ({"alpha": "1"}, 3),  # exactly `supervised`: only the labeled batch is forwarded
    ],
)
def test_loss_and_gradients_equal_ssl_bench_dninv(tmp_path, params, it):
    alg = build_algorithm(tmp_path, **params)
    plain = TinyUSBNet(as_dict=False)
    plain.load_state_dict(alg.model.state_dict())  # the same weights, as a plain ssl-bench model

    alg.it = it
    data_lb, data_ulb = fixed_batch()
    out, log = alg.train_step(**alg.process_batch(**data_lb, **data_ulb))
    out["loss"].backward()

    dninv = method_checks.make_method("dninv", K, seed=None, **params)
    batch = Batch(data_lb["x_lb"], data_lb["y_lb"], data_ulb["x_ulb_w"])
    loss, terms = dninv.loss(plain, batch, Progress(it, 10))
    loss.backward()

    assert torch.equal(out["loss"].detach(), loss.detach())
    for g_usb, g_ours in zip(grads(alg.model), grads(plain), strict=True):
        assert torch.equal(g_usb, g_ours)
    assert log["train/total_loss"] == loss.item() and log["train/sup_loss"] == terms["ce"].item()
    for name, value in terms.items():  # every computed term is logged under USB's name, skipped (NaN) ones are not
        key = "train/sup_loss" if name == "ce" else f"train/{name}_loss"
        assert (key in log) == (not value.isnan()) and (key not in log or log[key] == value.item())


def test_loss_equals_explicit_jacobian_computation(tmp_path):
    """α(t) = linear 0.9 → 0.3 and β = 0.4 at it = 4 of 10 (t = 4/9); x̂ from per-sample Jacobians."""
    alg = build_algorithm(tmp_path, alpha="linear:0.9:0.3", beta=0.4)
    alg.it = 4
    data_lb, data_ulb = fixed_batch(seed=3)
    out, _ = alg.train_step(**alg.process_batch(**data_lb, **data_ulb))

    net = alg.model
    x = torch.cat([data_lb["x_lb"], data_ulb["x_ulb_w"]])
    n_lb = len(data_lb["x_lb"])
    with torch.no_grad():
        logits = net(x)["logits"]
    x_hat = torch.stack(
        [
            torch.einsum("k,k...->...", logits[i], jacobian(lambda xi: net(xi[None])["logits"][0], x[i]))
            for i in range(len(x))
        ]
    )
    logp = F.log_softmax(logits, 1)
    ce = -logp[:n_lb].gather(1, data_lb["y_lb"][:, None]).mean()
    ent = -(logp[n_lb:].exp() * logp[n_lb:]).sum(1).mean()
    rec = ((x_hat - x) ** 2).mean()
    t = 4 / 9
    alpha, beta = (1 - t) * 0.9 + t * 0.3, 0.4
    expected = alpha * ce + (1 - alpha) * (beta * rec + (1 - beta) * ent)
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def digits_loaders(args):
    """scikit-learn's 8×8 digits through USB's `BasicDataset` and `get_data_loader` (labeled, unlabeled, eval)."""
    digits = load_digits()
    images = (digits.images * 255 / 16).astype(np.uint8)  # (1797, 8, 8)
    labels = digits.target
    lb = np.concatenate([np.flatnonzero(labels == c)[:4] for c in range(K)])  # 40 labels, class-balanced
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])
    lb_set = BasicDataset("dninv", images[lb], labels[lb], K, tf, is_ulb=False)
    ulb_set = BasicDataset("dninv", images[:1000], labels[:1000], K, tf, is_ulb=True, strong_transform=tf)
    eval_set = BasicDataset("dninv", images[1500:], labels[1500:], K, tf, is_ulb=False)
    return {
        "train_lb": get_data_loader(args, lb_set, args.batch_size, num_workers=0),
        "train_ulb": get_data_loader(args, ulb_set, args.batch_size * args.uratio, num_workers=0),
        "eval": get_data_loader(
            args, eval_set, args.eval_batch_size, data_sampler=None, num_workers=0, drop_last=False
        ),
    }


def test_usb_training_loop_runs_dninv_on_cpu(tmp_path):
    alg = build_algorithm(tmp_path, beta="linear:1:0.2", gamma="conv:0.1")
    alg.loader_dict = digits_loaders(alg.args)
    before = copy.deepcopy(alg.model.state_dict())

    alg.train()  # USB's loop: train_step, then its hooks (backward + SGD step, EMA, evaluation, checkpoints, logs)

    assert alg.it == 10
    assert all(not torch.equal(before[k], v) for k, v in alg.model.state_dict().items())
    log = alg.log_dict  # the last step's
    assert {
        "train/sup_loss",
        "train/rec_loss",
        "train/ent_loss",
        "train/rec_conv_loss",
        "train/total_loss",
        "lr",
    } <= set(log)
    assert all(math.isfinite(v) for v in log.values())
    assert log["train/beta"] == 0.2  # the schedule's end value at the last step
    assert 0 <= log["eval/top-1-acc"] <= 1 and set(alg.results_dict) == {"eval/best_acc", "eval/best_it"}
    assert (tmp_path / "run" / "latest_model.pth").exists() and (tmp_path / "run" / "model_best.pth").exists()
    ema = alg.ema_model.state_dict()
    assert not torch.equal(ema["fc.weight"], alg.model.state_dict()["fc.weight"])  # evaluation used EMA weights


@pytest.fixture
def one_thread():
    """One torch thread: wrn_28_2's double backward took 37 s with 2 threads on this 2-core machine while other
    jobs ran (thread contention), 1.7 s with one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class InMemoryCIFAR10:
    """torchvision's CIFAR10 as USB's `get_cifar` reads it (`.data`, `.targets`), from random images: no download."""

    def __init__(self, root, train=True, download=False, **kwargs):
        n = 60 if train else 20
        self.data = np.random.default_rng(int(train)).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)  # (N, H, W, C)
        self.targets = [i % K for i in range(n)]


def test_shipped_usb_config_trains_through_the_runner(tmp_path, monkeypatch, one_thread):
    """examples/usb: every key is an argument USB or dninv reads; `python -m ssl_bench.usb` trains it for 2 steps
    through USB's own CIFAR-10 pipeline (split, weak and strong transforms) and its wrn_28_2, on fake images."""
    config = usb.load_config(str(EXAMPLE), [])
    known = set(vars(get_config({"algorithm": "dninv"})))
    assert set(config) <= known, f"keys USB never reads: {sorted(set(config) - known)}"
    assert usb.dninv_config(get_config(config)) == load_method("dninv").Config()

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", InMemoryCIFAR10)
    monkeypatch.setattr(semilearn.datasets.utils, "base_dir", str(tmp_path))  # USB saves its split indices there
    overrides = {
        "num_train_iter": 2,
        "num_eval_iter": 2,
        "epoch": 1,
        "batch_size": 4,
        "eval_batch_size": 20,
        "num_workers": 0,
        "resume": False,
        "use_tensorboard": False,
        "save_dir": str(tmp_path),
        "data_dir": str(tmp_path),
        "beta": "linear:1:0.2",
    }
    argv = ["--c", str(EXAMPLE)] + [s for k, v in overrides.items() for s in (f"--{k}", str(v))]
    with pytest.warns(
        UserWarning, match="BatchNorm in training mode"
    ):  # wrn_28_2 has BatchNorm: ssl-bench's dninv says so
        results = usb.main(argv)
    assert set(results) == {"eval/best_acc", "eval/best_it"}
    assert (tmp_path / "dninv_cifar10_40_0" / "model_best.pth").exists()
    assert len(np.load(tmp_path / "data" / "cifar10" / "labeled_idx" / "lb_labels40_1_seed0_idx.npy")) == 40


def test_runner_refuses_several_processes(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        usb.main(["--c", str(EXAMPLE), "--multiprocessing_distributed", "True", "--save_dir", str(tmp_path)])
    assert exit_info.value.code == 2
