"""`dninv` as an algorithm of USB (`semilearn`, microsoft/Semi-supervised-learning), with ssl-bench's own loss.

Importing this module registers `dninv` in USB's algorithm registry (`semilearn.core.utils.ALGORITHMS`), so
USB's `get_algorithm`, `get_config`, `Trainer`, its training loop (`AlgorithmBase.train` and its hooks) and
its config files run it by name. The loss is not written again here: `train_step` hands USB's batch to
`DNInv.loss` (the method `ssl-bench run --method dninv` trains, taken from the method registry), so x̂, R, E,
the γ layers and the schedules are `ssl_bench.inversion`, `ssl_bench.losses` and `ssl_bench.schedules`. What
this module maps, and nothing more:

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
Run a USB config file: `python -m ssl_bench.usb --c examples/usb/dninv_cifar10_40_0.yaml`. The runner reads it
with ruamel's safe loader, never with USB's reader (which runs what a `!!python/…` tag names), checks it, and
hands USB a plain dict; a mistake is one line `Error: …` with exit code 2 (docs/usb.md, docs/errors.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import http.client
import math
import os
import pickle
import random
import re
import sys
import time
import urllib.error
import warnings
from inspect import signature
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from ruamel.yaml import YAML
from ruamel.yaml.constructor import ConstructorError
from ruamel.yaml.error import MarkedYAMLError, YAMLError

with warnings.catch_warnings():  # semilearn imports timm.models.layers: timm's deprecation, printed on every run
    warnings.filterwarnings("ignore", "Importing from timm.models.layers is deprecated", FutureWarning)
    from semilearn import get_config, get_net_builder
    from semilearn.algorithms import get_algorithm
    from semilearn.algorithms.utils import SSL_Argument
    from semilearn.core.algorithmbase import AlgorithmBase
    from semilearn.core.hooks import TimerHook
    from semilearn.core.utils import ALGORITHMS, TBLog, get_logger, send_model_cuda
    from semilearn.imb_algorithms import name2imbalg
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    precision_score,
    recall_score,
)
from torch import nn

from ssl_bench.config import build_config, to_jsonable
from ssl_bench.errors import UserError
from ssl_bench.method import Batch, MethodContext, Progress, load_method

NAME = "dninv"
DNInv = load_method(NAME)  # the method `ssl-bench run --method dninv` trains, from the method registry
DNInvConfig = DNInv.Config
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
            raise UserError(
                "dninv: ulb_loss_ratio must be 1.0 (alpha and beta weigh the unlabeled terms), "
                f"got {args.ulb_loss_ratio}"
            )
        if not args.use_cat:
            raise UserError("dninv: use_cat must be True (labeled and unlabeled samples are forwarded together)")
        kind = modality(args)
        context = MethodContext(kind, args.num_classes, torch.Generator().manual_seed(args.seed))
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
        logged = {
            LOG_NAMES.get(k, f"{k}_loss"): v.item() for k, v in terms.items() if not v.isnan()
        }  # host sync, as USB
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
        """USB's (EMA weights, same metrics and keys), which moves each batch with `.cuda()`; off a GPU, on the
        model's device."""
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


def read_yaml(text: str, where: str, lines: bool = True):
    """Plain data (dicts, lists, text, numbers, booleans, dates) from YAML text, by ruamel's safe loader.

    Never USB's reader (`over_write_args_from_file`: `ruamel.yaml.load` with its unsafe `Loader`, which builds
    any Python object a tag names, `!!python/object/apply:os.system` included). The safe loader constructs no
    tag but YAML's own; any other (`!!python/…`, `!local`), in a value, a key or a nested list, is refused.
    """
    try:
        return YAML(typ="safe", pure=True).load(text)
    except ConstructorError as exc:
        tag = re.search(r"tag '([^']*)'", exc.problem or "")
        if tag:
            name = tag.group(1).replace("tag:yaml.org,2002:", "!!")
            raise UserError(
                f"{where}{at_line(exc) if lines else ''}: the YAML tag {name} is refused: "
                "a config is read as plain data (text, numbers, booleans, lists, mappings), "
                "tags construct no objects"
            ) from exc
        raise UserError(f"{where}{at_line(exc) if lines else ''}: not valid YAML: {exc.problem}") from exc
    except YAMLError as exc:
        raise UserError(
            f"{where}{at_line(exc) if lines else ''}: not valid YAML: {getattr(exc, 'problem', None) or exc}"
        ) from exc


def at_line(exc: YAMLError) -> str:
    mark = exc.problem_mark if isinstance(exc, MarkedYAMLError) else None
    return f", line {mark.line + 1}" if mark is not None else ""


def read_config_file(path: str) -> dict:
    """A USB config file as a plain dict: read as bytes, decoded as UTF-8, parsed by `read_yaml` (safe)."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise UserError(f"cannot read the config file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}); a USB config is a YAML text file") from exc
    doc = read_yaml(text, path)
    if doc is None:
        raise UserError(f"{path} is empty; a USB config is a mapping of arguments, e.g. algorithm: dninv")
    if not isinstance(doc, dict):
        raise UserError(f"{path}: a USB config is a mapping of arguments (key: value lines), got a {yaml_kind(doc)}")
    bad = [k for k in doc if not isinstance(k, str)]
    if bad:
        raise UserError(f"{path}: argument names are text, got {bad[0]!r}")
    return doc


def yaml_kind(value) -> str:
    return {list: "list", str: "text", int: "number", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


def parse_overrides(overrides: list[str]) -> dict:
    """`--key value` pairs from the command line, each value parsed by `read_yaml` (safe) as one YAML value."""
    if len(overrides) % 2 or not all(k.startswith("--") for k in overrides[::2]):
        raise UserError(f"expected --key value pairs after the config file, got {' '.join(overrides)}")
    return {key[2:]: read_yaml(text, key, lines=False) for key, text in zip(overrides[::2], overrides[1::2])}


# USB's dataset names (semilearn.core.utils.get_dataset; for another name it builds no data and training fails)
USB_DATASETS = (
    (
        "eurosat",
        "tissuemnist",
        "semi_aves",
        "semi_aves_out",
        "cifar10",
        "cifar100",
        "svhn",
        "stl10",
        "imagenet",
        "imagenet127",
    )
    + USB_AUDIO
    + USB_TEXT
)


def check_config(config: dict, origin: dict[str, str]) -> None:
    """Names and types USB reads, checked before USB sees them (USB sets any key with `setattr` and checks no type).

    `origin` names where each key came from (the file or `--key`). Unknown keys are refused with close matches
    and the known ones; a value must have the type of USB's default (a number where USB's default is a number,
    a whole number where the default is one, a boolean for a flag, text for text); dninv's own arguments are
    checked by `build_config` when the algorithm is built.
    """
    algorithm = config.get("algorithm", "fixmatch")  # USB's default
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        raise UserError(
            f"{origin.get('algorithm')}: unknown algorithm {algorithm!r}; "
            f"USB knows {', '.join(sorted(ALGORITHMS.keys()))}"
        )
    imb = config.get("imb_algorithm")
    if imb is not None:
        if not isinstance(imb, str) or imb not in name2imbalg:
            raise UserError(
                f"{origin.get('imb_algorithm')}: unknown imb_algorithm {imb!r}; "
                f"USB knows {', '.join(sorted(name2imbalg.keys()))}"
            )
    defaults = vars(get_config({"algorithm": algorithm, "imb_algorithm": imb}))
    defaults.pop("c")  # the command line's config file, not an argument
    for key, value in config.items():
        where = origin.get(key, key)
        if key not in defaults:
            close = difflib.get_close_matches(key, defaults, n=3)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise UserError(
                f"{where}: unknown argument {key!r}, which USB never reads; {hint}known: {', '.join(sorted(defaults))}"
            )
        check_type(key, value, defaults[key], where)
    for key in ("epoch", "num_train_iter"):  # the runner divides by them
        if key in config and config[key] < 1:
            raise UserError(f"{origin[key]}: {key} must be at least 1, got {config[key]}")
    dataset = config.get("dataset", defaults["dataset"])
    if dataset not in USB_DATASETS:
        raise UserError(f"{origin.get('dataset')}: unknown dataset {dataset!r}; USB knows {', '.join(USB_DATASETS)}")


DNINV_FIELDS = {f.name for f in dataclasses.fields(DNInvConfig)}


# USB arguments whose default is None, by the type USB's parser gives them (`gpu: None` is also taken as text)
NONE_DEFAULTS = {"load_path": "", "imb_algorithm": "", "gpu": 0, "ulb_num_labels": 0}


def check_type(key: str, value, default, where: str) -> None:
    if key in DNINV_FIELDS or value is None and default is None or key == "gpu" and value == "None":
        return  # dninv's: build_config checks them
    if default is None:
        default = NONE_DEFAULTS.get(key)
    if isinstance(default, bool):
        ok, expected = isinstance(value, bool), "true or false"
    elif isinstance(default, (int, float)):
        whole = isinstance(default, int) and key != "clip_grad"  # clip_grad: a float argument whose default is 0
        ok = isinstance(value, int if whole else (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        expected = "a whole number" if whole else "a number"
    elif isinstance(default, str):
        ok, expected = isinstance(value, str), "text"
    else:
        return
    if not ok:
        raise UserError(f"{where}: {key} expects {expected}, got {value!r}")


def load_config(path: str, overrides: list[str]) -> dict:
    """A USB config file as a plain dict, then `--key value` overrides, all read by the safe loader and checked.

    Nothing of USB reads the file: `run` hands this dict to USB's `get_config`, which only sets its keys.
    """
    config = read_config_file(path)
    origin = dict.fromkeys(config, path)
    given = parse_overrides(overrides)
    config |= given
    origin |= {k: f"--{k}" for k in given}
    check_config(config, origin)
    return config


# Where USB's loaders read the datasets torchvision downloads (semilearn.datasets.cv_datasets: <data_dir>/<name>)
TORCHVISION_FILES = {
    "cifar10": lambda: (torchvision.datasets.CIFAR10.base_folder, cifar_files(torchvision.datasets.CIFAR10)),
    "cifar100": lambda: (torchvision.datasets.CIFAR100.base_folder, cifar_files(torchvision.datasets.CIFAR100)),
    "stl10": lambda: (
        torchvision.datasets.STL10.base_folder,
        [f for f, _ in torchvision.datasets.STL10.train_list + torchvision.datasets.STL10.test_list],
    ),
    "svhn": lambda: ("", [f for _, f, _ in torchvision.datasets.SVHN.split_list.values()]),
}
GETTING_DATA = {
    "cifar10": "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and extract it there",
    "cifar100": "download cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
    "and extract it there",
    "stl10": "download stl10_binary.tar.gz from https://cs.stanford.edu/~acoates/stl10/ and extract it there",
    "svhn": "download them from http://ufldl.stanford.edu/housenumbers/ (format 2, cropped digits) into that folder",
}
DOWNLOAD_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)


def cifar_files(cls) -> list[str]:
    return [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]


def missing_data_message(args: argparse.Namespace, exc: Exception) -> str:
    """Which files USB's loader for `args.dataset` expects, where, and how to get them (no download was possible)."""
    folder = Path(args.data_dir) / args.dataset.lower()
    why = f"USB could not download {args.dataset} ({exc.reason if isinstance(exc, urllib.error.URLError) else exc})"
    if args.dataset in TORCHVISION_FILES:
        sub, files = TORCHVISION_FILES[args.dataset]()
        where = folder / sub
        missing = [f for f in files if not (where / f).is_file()]
        what = (
            f"expected {', '.join(missing)} in {where}"
            if missing
            else f"the files in {where} ({', '.join(files)}) are not the official ones (torchvision checks their MD5)"
        )
        return f"{why}: {what}; {GETTING_DATA[args.dataset]}, or set data_dir"
    return (
        f"{why}: USB's loader reads it from {folder}; "
        "put the dataset's files there (USB's docs name them), or set data_dir"
    )


def resume_failure(exc: Exception) -> str:
    if isinstance(exc, pickle.UnpicklingError):  # torch's message goes on to explain how to turn weights_only off
        return "it holds objects other than tensors and plain values, which torch.load(weights_only=True) refuses"
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def run(config: dict) -> dict:
    """Train one USB config as USB's `train.py` does for one process; returns USB's `results_dict`.

    `config` is a plain dict (from `load_config`); USB's `get_config` sets its keys on USB's defaults and reads
    no file. A failed download, an I/O error and the runner's refusals are `UserError`s.
    """
    if not isinstance(config, dict):
        raise TypeError("run takes a plain dict of USB arguments (load_config reads a file)")
    if os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "0").lower() in ("1", "y", "yes", "true"):
        raise UserError(
            "unset TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD: USB loads checkpoints (resume, pretrain_path) "
            "with torch's default weights_only=True, which it would turn off"
        )
    args = get_config(config)
    if args.gpu == "None":
        args.gpu = None
    if args.multiprocessing_distributed or args.world_size > 1:
        raise UserError(
            "python -m ssl_bench.usb runs one process: set multiprocessing_distributed: False and world_size: 1"
        )
    args.distributed = False
    if args.num_train_iter % args.epoch:
        raise UserError(
            f"num_train_iter ({args.num_train_iter}) must be a multiple of epoch ({args.epoch}), as in USB's train.py"
        )
    random.seed(args.seed)  # as USB's train.py
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    try:
        save_path = os.path.join(args.save_dir, args.save_name)
        logger = get_logger(args.save_name, save_path, "INFO")
        tb_log = TBLog(save_path, "tensorboard", use_tensorboard=args.use_tensorboard)
        try:
            with (
                warnings.catch_warnings()
            ):  # USB's GradScaler(): torch's deprecation, and "CUDA is not available" on CPU
                warnings.filterwarnings(
                    "ignore", r"`torch\.cuda\.amp\.GradScaler\(args\.\.\.\)` is deprecated", FutureWarning
                )
                warnings.filterwarnings(
                    "ignore", "torch.cuda.amp.GradScaler is enabled, but CUDA is not available", UserWarning
                )
                algorithm = get_algorithm(args, get_net_builder(args.net, args.net_from_name), tb_log, logger)
        except DOWNLOAD_ERRORS as exc:
            if args.use_pretrain and not os.path.isfile(args.pretrain_path):
                raise UserError(
                    f"could not download pretrain_path {args.pretrain_path} ({exc}); give a local file"
                ) from exc
            raise UserError(missing_data_message(args, exc)) from exc
        if torch.cuda.is_available():
            algorithm.model = send_model_cuda(args, algorithm.model)
            algorithm.ema_model = send_model_cuda(args, algorithm.ema_model, clip_batch=False)
        if isinstance(algorithm, DNInvUSB):
            logger.info(f"dninv: {to_jsonable(algorithm.dninv.config)} on {algorithm.device}")
        if args.resume and args.load_path and os.path.exists(args.load_path):
            try:  # USB's torch.load passes no weights_only: torch's default, True (checked above), unpickles no code
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="Detected pickle protocol")  # a foreign pickle: refused
                    algorithm.load_model(args.load_path)
            except Exception as exc:  # a truncated, foreign or malicious file, or another network's weights
                raise UserError(
                    f"cannot resume from load_path {args.load_path} ({resume_failure(exc)}); "
                    "delete it or set resume: False"
                ) from exc
        algorithm.train()
    except OSError as exc:  # a folder that cannot be made, a full disk, a file that cannot be read
        target = f" {exc.filename}" if exc.filename else ""
        raise UserError(f"I/O error{target}: {exc.strerror or exc}") from exc
    for key, value in algorithm.results_dict.items():
        logger.info(f"Model result - {key} : {value}")
    return algorithm.results_dict


def main(argv: list[str] | None = None) -> dict:
    """`python -m ssl_bench.usb --c CONFIG.yaml [--key value …]`: train a USB config file with dninv registered.

    A mistake (a missing, empty, malformed or tagged file, an unknown or ill-typed argument, missing data) ends
    with one line on stderr, `Error: …`, and exit code 2; `--debug` (or SSL_BENCH_DEBUG=1) shows the traceback.
    """
    parser = argparse.ArgumentParser(prog="python -m ssl_bench.usb", description=main.__doc__)
    parser.add_argument("--c", required=True, help="a USB config file (YAML, read as plain data)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    known, rest = parser.parse_known_args(argv)
    try:
        return run(load_config(known.c, rest))
    except UserError as exc:
        if known.debug or os.environ.get("SSL_BENCH_DEBUG", "").lower() in ("1", "true", "yes", "on"):
            raise
        print("Error: " + " ".join(str(exc).split("\n")), file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
