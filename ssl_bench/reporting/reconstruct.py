"""`ssl-bench reconstruct`: a run's network inverts samples of its own data (the paper's Fig. 1).

The inverse `x̂ = (∂f/∂x)ᵀ f(x)` needs only the network, so this works for a run of any method. The run
is rebuilt from its record: `config.json` gives the dataset, split seed, model and options; the split is
drawn again and must match the fingerprint in `split.json`; inputs are normalized with the same training
statistics; `best.pt` holds the weights. The network is in eval mode (dropout off, BatchNorm on its
running statistics, so every sample is inverted on its own). Images are shown un-normalized (× train std
+ mean), each original beside its reconstruction on one colour scale per pair; 1-D inputs are drawn as
overlaid waveforms.
"""

from __future__ import annotations

import math
import os
import pickle
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import click
import torch

from ssl_bench import records
from ssl_bench.config import WholeNumber, check_output_folder
from ssl_bench.errors import UserError
from ssl_bench.inversion import reconstruct

SPLITS = ("test", "val", "labeled", "unlabeled")


@dataclass
class Reconstruction:
    """Samples of one split of a run, their reconstructions, in the data's original units."""

    x: torch.Tensor  # (N, C, H, W) or (N, C, L), un-normalized
    x_hat: torch.Tensor  # same shape, un-normalized with the same affine map
    y: torch.Tensor | None  # (N,) labels, None for the unlabeled split
    pred: torch.Tensor  # (N,) predicted classes
    title: str


def load_run(run_dir: Path, data_dir: str | None = None):
    """`(model in eval mode, DeviceData on CPU, config, checkpoint step)` of a run folder."""
    from ssl_bench.protocol import resolve, spec_from_config
    from ssl_bench.run.device_data import to_device
    from ssl_bench.run.preparation import init_model, prepare

    run_dir = Path(run_dir)
    for name in (records.CONFIG, records.SPLIT, records.BEST_CKPT):
        if not (run_dir / name).is_file():
            raise UserError(f"{run_dir} has no {name}; is it a run folder (written by `ssl-bench run`)?")
    config = read_object(run_dir / records.CONFIG)
    # the inverse needs only the network, so any method's run is rebuilt as `supervised` (its plugin may be gone)
    try:
        spec = spec_from_config(config, method="supervised", params={}, data_dir=data_dir, download=False, device="cpu")
        resolved = resolve(spec)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"{run_dir / records.CONFIG} is not a run's config ({type(exc).__name__}: {exc})") from None
    except UserError as exc:
        raise UserError(f"{run_dir / records.CONFIG}: {exc}") from None
    data, split = prepare(resolved)
    recorded = read_object(run_dir / records.SPLIT).get("fingerprint")
    if split.fingerprint(resolved.info.name) != recorded:
        raise UserError(
            f"the split drawn again for {run_dir.name} differs from the one in its split.json "
            f"({split.fingerprint(resolved.info.name)} vs {recorded}): "
            "the dataset files or the split code changed since the run"
        )
    dd = to_device(data, split, torch.device("cpu"))
    model = init_model(resolved, tuple(data.x_train.shape[1:]))
    ckpt = load_checkpoint(run_dir / records.BEST_CKPT)
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, TypeError, ValueError) as exc:  # other layer names or shapes
        first = str(exc).split("\n\t")[1:2] or [str(exc)]
        raise UserError(
            f"{run_dir / records.BEST_CKPT} does not fit the run's model {resolved.model} "
            f"({' '.join(first[0].split())})"
        ) from None
    return model.eval(), dd, config, ckpt.get("step")


def read_object(path: Path) -> dict:
    """A record holding a JSON object, else a one-line `UserError` naming the file."""
    try:
        doc = records.read_json(path)
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UserError(
            f"{path} is not readable JSON ({' '.join(str(exc).split())}); the run folder is damaged"
        ) from None
    if not isinstance(doc, dict):
        raise UserError(f"{path} holds a JSON {type(doc).__name__}, not an object; the run folder is damaged")
    return doc


def load_checkpoint(path: Path) -> dict:
    """A checkpoint `{"step", "val_acc", "model": state dict}`, loaded with `weights_only=True` (so a
    malicious pickle never runs); a truncated or foreign file is a one-line `UserError`."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # a foreign pickle: refused below
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(
            f"{path} is not an ssl-bench checkpoint: not a file of tensors "
            "(damaged, foreign or unsafe; only tensors are ever loaded)"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        reason = " ".join(str(exc).split(". ")[0].split())[:200]  # torch's first sentence
        raise UserError(
            f"{path} is not a readable checkpoint ({type(exc).__name__}: {reason}); "
            "it is truncated, damaged or not ssl-bench's"
        ) from None
    if not (isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict)):
        raise UserError(f"{path} is not an ssl-bench checkpoint (no model weights in it)")
    return ckpt


def run_reconstruction(run_dir: Path, n: int = 16, split: str = "test", data_dir: str | None = None) -> Reconstruction:
    """The first `n` samples of `split` and their reconstructions by the run's best checkpoint."""
    if split not in SPLITS:
        raise UserError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    model, dd, config, step = load_run(run_dir, data_dir)
    x, y = {
        "test": (dd.x_test, dd.y_test),
        "val": (dd.x_val, dd.y_val),
        "labeled": (dd.x_lb, dd.y_lb),
        "unlabeled": (dd.x_ulb, None),
    }[split]
    x, y = dd.inputs(x[:n]), None if y is None else y[:n]  # (N, C, ...) normalized
    logits, x_hat = reconstruct(model, x)  # (N, K), like x
    rel = ((x_hat - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)).median().item()  # normalized units
    title = (
        f"{config['run_id']}: {config['method']}, {config['model']}, best checkpoint (step {step})\n"
        f"{split} samples beside x̂ = (∂f/∂x)ᵀ f(x); median ‖x̂ − x‖ / ‖x‖ = {rel:.2f} (normalized inputs)"
    )
    return Reconstruction(dd.original_units(x), dd.original_units(x_hat.detach()), y, logits.argmax(1), title)


def save_reconstruction_figure(
    run_dir: Path, out: Path, n: int = 16, split: str = "test", data_dir: str | None = None
) -> Path:
    """Write a PNG of `n` samples of `split` beside their reconstructions by the run's best checkpoint."""
    out = check_figure_path(out)
    fig = reconstruction_figure(run_reconstruction(run_dir, n, split, data_dir))
    tmp = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        with os.fdopen(fd, "wb") as fh:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fh.fileno(), 0o666 & ~umask)  # the mode a plain open() gives (mkstemp's is 0600)
            fig.savefig(fh, dpi=120, format="png")
        os.replace(tmp, out)  # never half a PNG under `out`
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return out


def check_figure_path(out: Path) -> Path:
    """`out` if a PNG can be written there (checked before any work), else a one-line `UserError`."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise UserError(f"--out {out}: the figure is a PNG; give a file name ending in .png")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name ending in .png")
    check_output_folder(out.parent, f"--out {out}: the folder")
    return out


def reconstruction_figure(rec: Reconstruction):
    """Images: pairs (original, x̂) in a grid; 1-D signals: one panel per sample, waveforms overlaid."""
    from matplotlib.figure import Figure

    count = len(rec.x)
    per_row = math.ceil(math.sqrt(count))
    rows = math.ceil(count / per_row)
    image = rec.x.dim() == 4
    if image:
        fig = Figure(figsize=(2.2 * per_row, 1.25 * rows + 0.6))
        axes = fig.subplots(rows, 2 * per_row, squeeze=False)
    else:
        fig = Figure(figsize=(3.2 * per_row, 1.8 * rows + 0.6))
        axes = fig.subplots(rows, per_row, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(count):
        label = "" if rec.y is None else f"y={rec.y[i].item()} "
        caption = f"{label}pred={rec.pred[i].item()}"
        r, c = divmod(i, per_row)
        if image:
            draw_pair(axes[r, 2 * c], axes[r, 2 * c + 1], rec.x[i], rec.x_hat[i], caption)
        else:
            draw_waveforms(axes[r, c], rec.x[i], rec.x_hat[i], caption)
    fig.suptitle(rec.title, fontsize=8)
    fig.tight_layout()
    return fig


def draw_pair(ax_x, ax_hat, x: torch.Tensor, x_hat: torch.Tensor, caption: str) -> None:
    """Original and reconstruction (C, H, W) on one colour scale: grayscale, or RGB for 3 channels."""
    lo, hi = min(x.min(), x_hat.min()).item(), max(x.max(), x_hat.max()).item()
    for ax, img, text in ((ax_x, x, caption), (ax_hat, x_hat, "x̂")):
        if img.shape[0] == 3:
            ax.imshow(((img - lo) / max(hi - lo, 1e-12)).permute(1, 2, 0).numpy())
        else:
            ax.imshow(img.mean(0).numpy(), cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(text, fontsize=7)


def draw_waveforms(ax, x: torch.Tensor, x_hat: torch.Tensor, caption: str) -> None:
    """Original (black) and reconstruction (orange) of each channel of a (C, L) signal, overlaid."""
    ax.axis("on")
    for c in range(x.shape[0]):
        ax.plot(x[c].numpy(), color="black", linewidth=0.7, label="x" if c == 0 else None)
        ax.plot(x_hat[c].numpy(), color="tab:orange", linewidth=0.7, alpha=0.8, label="x̂" if c == 0 else None)
    ax.set_title(caption, fontsize=7)
    ax.tick_params(labelsize=6)
    ax.legend(fontsize=6, loc="upper right")


@click.command("reconstruct")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--n", type=WholeNumber(min=1), default=16, show_default=True, help="Samples to draw (the first ones of the split)."
)
@click.option(
    "--split", type=click.Choice(SPLITS), default="test", show_default=True, help="Which samples of the run's split."
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="PNG file [RUN_DIR/reconstruction-SPLIT.png].",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where the dataset's files are (default: as for `run`).",
)
def reconstruct_command(run_dir: Path, n: int, split: str, out: Path | None, data_dir: str | None) -> None:
    """Draw a run's inputs beside their reconstructions x̂ = (∂f/∂x)ᵀ f(x) by its best checkpoint.

    Works for a run of any method: the inverse needs only the network.

    \b
    Example:
        ssl-bench reconstruct runs/digits-50-tinycnn-dninv-s0-1a2b3c4d
        ssl-bench reconstruct RUN_DIR --n 8 --split val --out reconstruction.png
    """
    path = save_reconstruction_figure(
        run_dir, out or run_dir / f"reconstruction-{split}.png", n=n, split=split, data_dir=data_dir
    )
    click.echo(f"wrote {path}")
