"""`dninv` as an algorithm of USB (`semilearn`, microsoft/Semi-supervised-learning), with ssl-bench's own loss.

Importing this module registers `dninv` in USB's algorithm registry (`semilearn.core.utils.ALGORITHMS`), so
USB's `get_algorithm`, `get_config`, `Trainer`, its training loop (`AlgorithmBase.train` and its hooks) and
its config files run it by name. The loss is not written again here: `train_step` hands USB's batch to
`DNInv.loss` (plugins/dninv.py, the method `ssl-bench run --method dninv` trains), so x̂, R, E, the γ layers
and the schedules are `ssl_bench.inversion`, `ssl_bench.losses` and `ssl_bench.schedules`. What this module
maps, and nothing more:

- USB's arguments `alpha`, `beta`, `reduction`, `detach_cotangent`, `gamma`, `formulation` -> `DNInvConfig`,
  parsed as `ssl-bench run -p key=value` parses them (numbers, `linear:1:0.2`, `conv2:0.1,conv3:cosine:0.5:0`);
- USB's batch `(x_lb, y_lb, x_ulb_w)` -> `Batch(x_lb, y_lb, x_ulb)` (the strong view `x_ulb_s` is unused);
- USB's iteration `it` of `num_train_iter` -> `Progress(it, num_train_iter)` (t = it / (num_train_iter − 1));
- USB's networks, which return `{"logits": …, "feat": …}` -> a module returning the logits (`LogitsOf`).

USB only trains on CUDA (its `train.py` stops with "ONLY GPU TRAINING IS SUPPORTED"). So that `dninv` also
runs on CPU, three of USB's CUDA-only steps are replaced when the model is not on a GPU (on a GPU USB's own
run): moving a batch (`.cuda()` in `process_batch` and `evaluate`) and timing a step (CUDA events in
`TimerHook`). How dninv maps onto USB's protocol, and what differs from ours: docs/usb.md.

Needs the `usb` extra (`pip install "ssl-bench[usb]"`); `import ssl_bench` does not import this module.
Run a USB config file: `python -m ssl_bench.usb --c examples/usb/dninv_cifar10_40_0.yaml`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import time
from inspect import signature

import numpy as np
import torch
import torch.nn.functional as F
from semilearn import get_config, get_net_builder
from semilearn.algorithms import get_algorithm
from semilearn.algorithms.utils import SSL_Argument
from semilearn.core.algorithmbase import AlgorithmBase
from semilearn.core.hooks import TimerHook
from semilearn.core.utils import (
    ALGORITHMS,
    TBLog,
    get_logger,
    over_write_args_from_file,
    send_model_cuda,
)
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    precision_score,
    recall_score,
)
from ssl_bench_plugins.dninv import DNInv, DNInvConfig
from torch import nn

from ssl_bench.augment import AUGMENTATIONS
from ssl_bench.config import build_config, to_jsonable
from ssl_bench.errors import UserError
from ssl_bench.method import Batch, MethodContext, Progress

NAME = "dninv"
# USB's dataset names by modality (semilearn.core.utils.get_dataset); token ids cannot be inverted.
USB_AUDIO = ("esc50", "fsdnoisy", "gtzan", "superbks", "superbsi", "urbansound8k")
USB_TEXT = ("aclImdb", "ag_news", "amazon_review", "dbpedia", "yahoo_answers", "yelp_review")
# The terms DNInv logs, under USB's log names (`train/sup_loss` is every USB algorithm's labeled loss).
LOG_NAMES = {"ce": "sup_loss", "rec": "rec_loss", "ent": "ent_loss"}


def usb_arguments() -> list[SSL_Argument]:
    """One USB argument per `DNInvConfig` field, defaulting to ssl-bench's default (as text, as `-p` takes it)."""
    defaults = DNInvConfig()
    return [
        SSL_Argument(f"--{f.name}", str, str(getattr(defaults, f.name)), help=f"dninv {f.name} (docs/usb.md)")
        for f in dataclasses.fields(DNInvConfig)
    ]


def dninv_config(args: argparse.Namespace) -> DNInvConfig:
    """`DNInvConfig` from USB's arguments: text from the command line, numbers, booleans or mappings from YAML."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(DNInvConfig) if hasattr(args, f.name)}
    return build_config(DNInvConfig, given, "dninv")


def modality(args: argparse.Namespace) -> str:
    """ssl-bench's modality for a USB dataset; text is refused (x̂ needs a differentiable input)."""
    if args.dataset in USB_TEXT:
        raise UserError(f"dninv needs float inputs to invert; {args.dataset} is text (token ids)")
    return "signal" if args.dataset in USB_AUDIO else "image"


class LogitsOf(nn.Module):
    """A USB network seen as ssl-bench sees a model: `forward(x)` returns the logits.

    The network's children are registered here under their own names (shared, not copied), so dninv's γ
    layer names are the network's (`block1`, not `net.block1`); `net` is called as given (DataParallel,
    DistributedDataParallel and EMA swaps included).
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = [net]  # a list: not registered a second time as a child
        inner = net.module if isinstance(net, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else net
        for name, child in inner.named_children():
            self.add_module(name, child)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[0](x)["logits"]


class WallClock:
    """The part of `torch.cuda.Event` that USB's `TimerHook` uses, from the host clock (no GPU)."""

    def record(self) -> None:
        self.t = time.perf_counter()

    def elapsed_time(self, end: WallClock) -> float:
        return (end.t - self.t) * 1000.0  # ms, like CUDA events


class DeviceTimerHook(TimerHook):
    """USB's `TimerHook` (logs `lr` and `train/prefetch_time`), with the host clock when there is no GPU."""

    def before_run(self, algorithm):
        if algorithm.device.type == "cuda":
            return super().before_run(algorithm)
        algorithm.start_batch, algorithm.end_batch = WallClock(), WallClock()
        algorithm.start_batch.record()


def to_device(value, device: torch.device):
    """A tensor, or a dict of tensors (USB's text batches), on `device`."""
    return {k: t.to(device) for k, t in value.items()} if isinstance(value, dict) else value.to(device)


@ALGORITHMS.register(NAME)
class DNInvUSB(AlgorithmBase):
    """Deep network inversion (arXiv 1711.04313) in USB; the loss is ssl-bench's `DNInv.loss`.

    USB arguments (defaults as in ssl-bench): `alpha` (0.7), `beta` (0.2), `reduction` (mean), `detach_cotangent`
    (False), `gamma` (none), `formulation` (double_backward). `alpha`, `beta` and each γ take a number or
    `linear|cosine:START:END`. USB's `ulb_loss_ratio` must stay 1.0 (α and β weigh the unlabeled terms) and
    `use_cat` True (dninv forwards labeled and unlabeled samples together).
    """

    def __init__(self, args, net_builder, tb_log=None, logger=None):
        if args.ulb_loss_ratio != 1.0:  # refused, not silently ignored
            raise UserError(f"dninv: ulb_loss_ratio must be 1.0 (alpha and beta weigh the unlabeled terms), got {args.ulb_loss_ratio}")
        if not args.use_cat:
            raise UserError("dninv: use_cat must be True (labeled and unlabeled samples are forwarded together)")
        kind = modality(args)
        context = MethodContext(kind, args.num_classes, torch.Generator().manual_seed(args.seed), AUGMENTATIONS[kind])
        self.dninv = DNInv(dninv_config(args), context)  # before USB builds data and model: bad arguments fail first
        super().__init__(args, net_builder, tb_log, logger)
        self.dninv.check_model(LogitsOf(self.model))  # γ layer names

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def set_hooks(self):
        super().set_hooks()
        self.register_hook(DeviceTimerHook(), "TimerHook", "LOW")  # takes the place of USB's (same name)

    def train_step(self, x_lb, y_lb, x_ulb_w):
        if isinstance(x_lb, dict):
            raise UserError("dninv needs float inputs to invert; this batch is a dict of token ids")
        progress = Progress(self.it, self.num_train_iter)
        with self.amp_cm():
            loss, terms = self.dninv.loss(LogitsOf(self.model), Batch(x_lb, y_lb, x_ulb_w), progress)
        cfg, t = self.dninv.config, progress.fraction
        logged = {LOG_NAMES.get(k, f"{k}_loss"): v.item() for k, v in terms.items() if not v.isnan()}  # host sync, as USB
        log_dict = self.process_log_dict(**logged, total_loss=loss.item(), alpha=cfg.alpha.at(t), beta=cfg.beta.at(t))
        return self.process_out_dict(loss=loss), log_dict

    def process_batch(self, input_args=None, **kwargs):
        """USB's, which moves the batch with `.cuda()`; off a GPU, the same to the model's device."""
        device = self.device
        if device.type == "cuda":
            return super().process_batch(input_args, **kwargs)
        wanted = input_args if input_args is not None else signature(self.train_step).parameters
        return {k: to_device(v, device) for k, v in kwargs.items() if k in wanted and v is not None}

    def evaluate(self, eval_dest="eval", out_key="logits", return_logits=False):
        """USB's (EMA weights, same metrics and keys), which moves each batch with `.cuda()`; off a GPU, on the model's device."""
        device = self.device
        if device.type == "cuda":
            return super().evaluate(eval_dest, out_key, return_logits)
        self.model.eval()
        self.ema.apply_shadow()
        logits, y = [], []
        with torch.no_grad():
            for data in self.loader_dict[eval_dest]:
                logits.append(self.model(data["x_lb"].to(device))[out_key].cpu())  # (B, K)
                y.append(data["y_lb"].cpu())
        self.ema.restore()
        self.model.train()
        logits, y = torch.cat(logits), torch.cat(y)
        pred = logits.argmax(1).numpy()
        out = {
            f"{eval_dest}/loss": F.cross_entropy(logits, y, ignore_index=-1).item(),
            f"{eval_dest}/top-1-acc": accuracy_score(y, pred),
            f"{eval_dest}/balanced_acc": balanced_accuracy_score(y, pred),
            f"{eval_dest}/precision": precision_score(y, pred, average="macro", zero_division=0),
            f"{eval_dest}/recall": recall_score(y, pred, average="macro", zero_division=0),
            f"{eval_dest}/F1": f1_score(y, pred, average="macro", zero_division=0),
        }
        if return_logits:
            out[f"{eval_dest}/logits"] = logits.numpy()
        return out

    @staticmethod
    def get_argument():
        return usb_arguments()


# --------------------------------------------------------------------------------------------------
# A USB config file, run in one process (USB's train.py is not part of the semilearn package)


def load_config(path: str, overrides: list[str]) -> dict:
    """A USB config file (read by USB's own reader), then `--key value` overrides, each value a YAML scalar."""
    from ruamel.yaml import YAML

    ns = argparse.Namespace()
    over_write_args_from_file(ns, path)
    config = vars(ns)
    if len(overrides) % 2 or not all(k.startswith("--") for k in overrides[::2]):
        raise UserError(f"expected --key value pairs after the config file, got {' '.join(overrides)}")
    for key, text in zip(overrides[::2], overrides[1::2]):
        config[key[2:]] = YAML(typ="safe").load(text)
    return config


def run(config: dict) -> dict:
    """Train one USB config as USB's `train.py` does for one process; returns USB's `results_dict`."""
    args = get_config(config)
    if args.gpu == "None":
        args.gpu = None
    if args.multiprocessing_distributed or args.world_size > 1:
        raise UserError("python -m ssl_bench.usb runs one process: set multiprocessing_distributed: False and world_size: 1")
    args.distributed = False
    if args.num_train_iter % args.epoch:
        raise UserError(f"num_train_iter ({args.num_train_iter}) must be a multiple of epoch ({args.epoch}), as in USB's train.py")
    random.seed(args.seed)  # as USB's train.py
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    save_path = os.path.join(args.save_dir, args.save_name)
    logger = get_logger(args.save_name, save_path, "INFO")
    tb_log = TBLog(save_path, "tensorboard", use_tensorboard=args.use_tensorboard)
    algorithm = get_algorithm(args, get_net_builder(args.net, args.net_from_name), tb_log, logger)
    if torch.cuda.is_available():
        algorithm.model = send_model_cuda(args, algorithm.model)
        algorithm.ema_model = send_model_cuda(args, algorithm.ema_model, clip_batch=False)
    logger.info(f"dninv: {to_jsonable(algorithm.dninv.config)} on {algorithm.device}")
    if args.resume and args.load_path and os.path.exists(args.load_path):
        algorithm.load_model(args.load_path)
    algorithm.train()
    for key, value in algorithm.results_dict.items():
        logger.info(f"Model result - {key} : {value}")
    return algorithm.results_dict


def main(argv: list[str] | None = None) -> dict:
    """`python -m ssl_bench.usb --c CONFIG.yaml [--key value …]`: train a USB config file with dninv registered."""
    parser = argparse.ArgumentParser(prog="python -m ssl_bench.usb", description=main.__doc__)
    parser.add_argument("--c", required=True, help="a USB config file (YAML)")
    known, rest = parser.parse_known_args(argv)
    try:
        return run(load_config(known.c, rest))
    except UserError as exc:
        parser.exit(2, f"error: {exc}\n")


if __name__ == "__main__":
    main()
