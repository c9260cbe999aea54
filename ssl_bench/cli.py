"""The `ssl-bench` command line. Each command is a docstring and a short body calling the library."""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from pathlib import Path

import click

import ssl_bench
from ssl_bench.config import (
    MAX_STEPS,
    Number,
    WholeNumber,
    check_output_folder,
    config_options,
    option_fields,
    parse_assignments,
    parse_int,
    parse_option_values,
)
from ssl_bench.errors import UserError
from ssl_bench.interrupts import Interrupted, sigterm_raises
from ssl_bench.protocol import ProtocolConfig
from ssl_bench.reporting.reconstruct import reconstruct_command
from ssl_bench.reporting.report import report as report_command
from ssl_bench.run.distributed import world_from_env
from ssl_bench.run.health import HINT, flag_of


class Group(click.Group):
    """Turns `UserError` into one line on stderr and exit code 2 (a traceback only with --debug)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            if (ctx.obj or {}).get("debug"):
                raise
            click.echo("Error: " + " ".join(str(exc).split("\n")), err=True)
            ctx.exit(2)
        except Interrupted as exc:
            click.echo(f"Interrupted: {exc.message}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted: what was written so far is kept; rerun the same command to resume.", err=True)
            ctx.exit(130)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(ssl_bench.__version__, prog_name="ssl-bench")
@click.option("--debug", is_flag=True, envvar="SSL_BENCH_DEBUG", help="Show tracebacks of errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """ssl-bench: semi-supervised learning methods as plugins, compared under one protocol.

    \b
    Example:
        ssl-bench run --method dninv --dataset digits --labels 50
        ssl-bench sweep --dataset digits --labels 50 --seeds 0,1,2 --out runs/demo
        ssl-bench report runs/demo --out reports/digits-50
        ssl-bench list methods
    """
    ctx.ensure_object(dict)["debug"] = debug


PROTOCOL_OPTIONS = option_fields(ProtocolConfig)  # batch_lb, lr_schedule, …: the protocol's options of run and sweep
STEPS_WHY = (
    "the largest step budget ssl-bench takes (10^8: ~95x FixMatch's 2^20, the longest schedule in SSL papers; "
    "a larger one is almost surely a typo, docs/errors.md)"
)


def run_options(f, required: bool = True):
    """Options shared by `run`, `sweep` and `status`: the protocol, the data and the model. The protocol's
    options are derived from `ProtocolConfig`'s fields (`config_options`: name, type, help, default);
    `--steps`, `--lr` and `--seed` stay written out here, as they are `RunSpec` fields whose defaults come
    from the dataset, the model and the sweep."""
    options = [
        click.option("--dataset", required=required, help="Dataset name (see `ssl-bench list datasets`)."),
        click.option("--labels", required=required, help="Labeled training samples (recordings for audio), or 'all'."),
        click.option("--model", default=None, help="Model name (default: the dataset's; see `ssl-bench list models`)."),
        click.option(
            "--steps",
            type=WholeNumber(min=1, max=MAX_STEPS, why=STEPS_WHY),
            default=None,
            help="Optimizer steps (default: the dataset's).",
        ),
        click.option(
            "--lr",
            type=Number(min=0, min_open=True),
            default=None,
            help="Adam learning rate (default: the model's paper value).",
        ),
        *config_options(ProtocolConfig),
        click.option(
            "--val-size",
            type=WholeNumber(min=1),
            default=None,
            help="Validation samples carved from train (default: the dataset's).",
        ),
        click.option("--exclude-labeled", is_flag=True, help="Keep the labeled samples out of the unlabeled set."),
        click.option(
            "-m",
            "model_options",
            multiple=True,
            metavar="KEY=VALUE",
            help="Model option, e.g. -m pool=max (repeatable).",
        ),
        click.option(
            "-d",
            "dataset_options",
            multiple=True,
            metavar="KEY=VALUE",
            help="Dataset option, e.g. -d sample_rate=16000 (repeatable).",
        ),
        click.option(
            "--data-dir",
            type=click.Path(file_okay=False),
            default=None,
            help="Where the dataset's files are (default: $SSL_BENCH_DATA or ~/.cache/ssl-bench/data/<dataset>).",
        ),
        click.option("--download/--no-download", default=True, help="Download missing dataset files [download]."),
        click.option(
            "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", help="Training device [auto]."
        ),
        click.option("--out", type=click.Path(file_okay=False), default="runs", help="Folder for run records [runs]."),
        click.option(
            "--state-every",
            type=WholeNumber(min=1),
            default=500,
            show_default=True,
            help="Steps between saves of the resumable state (also saved at every evaluation and on Ctrl-C / SIGTERM).",
        ),
        click.option(
            "--log",
            "log",
            multiple=True,
            type=click.Choice(["tensorboard"]),
            help="Live tracking while runs train: tensorboard (the tensorboard extra), "
            "under each run folder (repeatable).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def cluster_options(f):
    """`sweep`'s executor and, for a cluster, how its jobs are submitted (ssl_bench.sweeps.slurm)."""
    from ssl_bench.sweeps.slurm import EXECUTORS

    options = [
        click.option(
            "--executor",
            type=click.Choice(EXECUTORS),
            default="local",
            show_default=True,
            help="Where runs train: local (processes here, --workers), "
            "slurm (one SLURM job array through submitit: the slurm extra), "
            "submitit-local (the slurm path as processes here, to try it without a cluster).",
        ),
        click.option("--partition", default=None, help="slurm: the partition [the cluster's default]."),
        click.option(
            "--time-min",
            type=WholeNumber(min=1),
            default=None,
            help="slurm: time limit of each job (one run), minutes; a longer run is requeued and resumes [60].",
        ),
        click.option(
            "--gpus-per-job",
            type=WholeNumber(min=0),
            default=None,
            help="slurm: GPUs per job (one run); 0 for CPU runs [1].",
        ),
        click.option(
            "--cpus-per-job",
            type=WholeNumber(min=1),
            default=None,
            help="slurm: CPU cores per job [the cluster's default].",
        ),
        click.option(
            "--array-parallelism",
            type=WholeNumber(min=1),
            default=None,
            help="slurm: jobs of the array running at once [256].",
        ),
        click.option(
            "--max-timeouts",
            type=WholeNumber(min=0),
            default=None,
            help="slurm: times a run may hit the time limit and be requeued (preemptions requeue without limit) [3].",
        ),
        click.option(
            "--sbatch",
            "sbatch",
            multiple=True,
            metavar="KEY=VALUE",
            help="slurm: an extra sbatch option, e.g. --sbatch account=myproj --sbatch mem=16G (repeatable).",
        ),
        click.option(
            "--wait/--no-wait",
            default=True,
            help="slurm: follow the jobs to the end and print the table, or return once they are submitted [wait].",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


SLURM_FLAGS = (
    "partition",
    "time_min",
    "gpus_per_job",
    "cpus_per_job",
    "array_parallelism",
    "max_timeouts",
    "sbatch",
    "wait",
)


def slurm_options(kw: dict, workers_given: bool):
    """The `SlurmOptions` of `--executor slurm` / `submitit-local`, or None for the local pool."""
    from ssl_bench.sweeps.slurm import SlurmOptions, check_cluster, parse_sbatch

    ctx = click.get_current_context()
    given = [name for name in SLURM_FLAGS if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE]
    if kw["executor"] == "local":
        if given:
            flag = "--no-wait" if given[0] == "wait" and not kw["wait"] else "--" + given[0].replace("_", "-")
            raise UserError(
                f"{flag} is an option of --executor slurm; the local executor runs --workers processes here"
            )
        return None
    if workers_given:
        raise UserError(
            "--workers is for --executor local; with slurm each run is one job (--array-parallelism N runs N at once)"
        )
    defaults = SlurmOptions()
    options = SlurmOptions(
        partition=not_empty(kw["partition"], "--partition"),
        time_min=kw["time_min"] or defaults.time_min,
        gpus_per_job=defaults.gpus_per_job if kw["gpus_per_job"] is None else kw["gpus_per_job"],
        cpus_per_job=kw["cpus_per_job"],
        array_parallelism=kw["array_parallelism"] or defaults.array_parallelism,
        max_timeouts=defaults.max_timeouts if kw["max_timeouts"] is None else kw["max_timeouts"],
        sbatch=parse_sbatch(kw["sbatch"]),
        cluster="slurm" if kw["executor"] == "slurm" else "local",
    )
    check_cluster(options)
    return options


def parse_labels(value: str | None) -> int | None:
    if value is None or value == "all":
        return None
    try:
        return parse_int(value)
    except ValueError:
        raise UserError(f"--labels expects a whole number or 'all' (ASCII digits 0-9), got {value!r}") from None


def not_empty(value: str | None, option: str) -> str | None:
    """`value`, unless it is `''` (which would silently mean the default)."""
    if value is not None and not value.strip():
        raise UserError(f"{option} is empty; leave it out for the default or give a folder")
    return value


def model_dataset_kwargs(kw: dict) -> dict:
    """The RunSpec fields that `run` and `sweep` share, from the parsed options."""
    protocol = {k: kw[k] for k in PROTOCOL_OPTIONS if kw[k] is not None}
    return dict(
        dataset=kw["dataset"],
        labels=parse_labels(kw["labels"]),
        model=kw["model"],
        steps=kw["steps"],
        lr=kw["lr"],
        val_size=kw["val_size"],
        exclude_labeled=kw["exclude_labeled"],
        model_options=parse_option_values(parse_assignments(kw["model_options"], "-m")),
        dataset_options=parse_option_values(parse_assignments(kw["dataset_options"], "-d")),
        protocol=protocol,
        data_dir=not_empty(kw["data_dir"], "--data-dir"),
        download=kw["download"],
        device=kw["device"],
    )


@cli.command()
@click.option("--method", required=True, help="Method name (see `ssl-bench list methods`).")
@run_options
@click.option(
    "--seed",
    type=WholeNumber(),
    default=0,
    show_default=True,
    help="Seeds the split, init, batch order and the method's randomness.",
)
@click.option(
    "-p", "params", multiple=True, metavar="KEY=VALUE", help="Method config field, e.g. -p alpha=0.6 (repeatable)."
)
@click.option("--force", is_flag=True, help="Run again from step 0 even if this exact run is complete in --out.")
@click.option("--restart", is_flag=True, help="Start an interrupted run over from step 0 instead of resuming it.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run(method: str, seed: int, params: tuple[str, ...], force: bool, restart: bool, quiet: bool, **kw) -> None:
    """Train one method on one dataset and write a run record.

    An interrupted run (Ctrl-C, SIGTERM, kill -9) resumes where its last saved state was when the same
    command is run again.

    \b
    Example:
        ssl-bench run --method supervised --dataset digits --labels 50
        ssl-bench run --method supervised --dataset digits --labels 50 --seed 1 --steps 300
    """
    from ssl_bench.protocol import RunSpec, resolve
    from ssl_bench.run.training import train

    check_output_folder(kw["out"])
    spec = RunSpec(method=method, seed=seed, params=parse_assignments(params, "-p"), **model_dataset_kwargs(kw))
    announce = lambda config: click.echo(f"config: {json.dumps(config, default=str)}", err=True)
    result = train(
        resolve(spec),
        Path(kw["out"]),
        show_progress=not quiet,
        force=force,
        restart=restart,
        state_every=kw["state_every"],
        log=kw["log"],
        on_start=announce,
        echo=lambda m: click.echo(m, err=True),
    )
    if world_from_env().rank > 0:  # torchrun: rank 0 speaks for the run, every rank exits alike
        click.get_current_context().exit(2 if flag_of(result) else 0)
    click.echo(summary_line(result))
    click.echo(f"run folder: {Path(kw['out']) / result['run_id']}")
    if flag_of(result):
        raise UserError(
            f"the run {flag_of(result)}; result.json carries the flag and reports leave the run out ({HINT})"
        )


@cli.command()
@click.argument("grid", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--methods", default=None, help="Comma-separated methods [all registered].")
@click.option("--seeds", default=None, help="Comma-separated seeds [0,1,2].")
@functools.partial(run_options, required=False)
@click.option(
    "-p",
    "params",
    multiple=True,
    metavar="METHOD.KEY=VALUE",
    help="A method's config field, e.g. -p dninv.alpha=0.6 (repeatable).",
)
@click.option(
    "--workers",
    type=WholeNumber(min=1),
    default=1,
    show_default=True,
    help="Runs in parallel: a pool of N worker processes, "
    "each training runs one after another (spread over the visible GPUs, or CPU processes).",
)
@click.option(
    "--runs-per-gpu",
    type=WholeNumber(min=1),
    default=None,
    help="Runs side by side on each visible GPU (workers = K × GPUs), each pinned to its GPU.",
)
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Run again the runs that failed (diverged) before; by default they are skipped.",
)
@click.option("--quiet", is_flag=True, help="Only the overall progress bar.")
@cluster_options
def sweep(
    grid: str | None,
    methods: str | None,
    seeds: str | None,
    params: tuple[str, ...],
    workers: int,
    runs_per_gpu: int | None,
    retry_failed: bool,
    quiet: bool,
    **kw,
) -> None:
    """Run methods × seeds (or a TOML grid) under one protocol, then print the comparison table.

    Runs already complete in --out are skipped, so an interrupted sweep resumes.

    \b
    Example:
        ssl-bench sweep --methods supervised,entmin,pimodel --dataset digits --labels 50 --seeds 0,1,2
        ssl-bench sweep examples/grids/digits.toml --workers 2
    """
    from ssl_bench.catalog import format_table
    from ssl_bench.sweeps.sweep import run_sweep, summary_rows

    check_output_folder(kw["out"])
    ctx = click.get_current_context()
    cluster = slurm_options(
        kw, workers_given=ctx.get_parameter_source("workers") is click.core.ParameterSource.COMMANDLINE
    )
    specs = grid_specs(grid, methods, seeds, params, kw)
    if runs_per_gpu is not None:
        workers = gpu_workers(
            runs_per_gpu,
            ctx.get_parameter_source("workers") is click.core.ParameterSource.COMMANDLINE,
            kw["device"],
            cluster is None,
        )
    outcome = run_sweep(
        specs,
        Path(kw["out"]),
        workers=workers,
        show_progress=not quiet,
        retry_failed=retry_failed,
        state_every=kw["state_every"],
        log=kw["log"],
        cluster=cluster,
        wait=kw["wait"],
        echo=lambda m: click.echo(m, err=True),
    )
    if cluster is not None and not kw["wait"]:
        return  # submitted; run_sweep said how to follow the jobs
    if outcome.results:
        click.echo(format_table(summary_rows(outcome.results)))
    click.echo(f"runs folder: {kw['out']}")
    for run_id, error in outcome.failed.items():
        click.echo(f"failed: {run_id}: {error}", err=True)
    for run_id, flag in outcome.flagged.items():
        click.echo(f"flagged: {run_id}: {flag}", err=True)
    if outcome.failed or outcome.flagged:
        raise UserError(
            f"of {len(specs)} runs, {len(outcome.failed)} failed (failed.json) "
            f"and {len(outcome.flagged)} collapsed or diverged "
            "(flagged in result.json), listed above; the table shows the others"
        )


def gpu_workers(runs_per_gpu: int, workers_given: bool, device: str, local: bool) -> int:
    """`--runs-per-gpu K`: K workers per visible GPU (ssl_bench.sweeps.sweep spreads them evenly)."""
    import torch

    if not local:
        raise UserError("--runs-per-gpu is for --executor local; with slurm each run is one job (--gpus-per-job)")
    if workers_given:
        raise UserError("give --workers or --runs-per-gpu, not both (--runs-per-gpu K sets K × GPUs workers)")
    if device == "cpu" or not torch.cuda.is_available():
        raise UserError("--runs-per-gpu needs CUDA GPUs and torch sees none; use --workers N on CPU")
    return runs_per_gpu * torch.cuda.device_count()


def grid_specs(grid: str | None, methods: str | None, seeds: str | None, params: tuple[str, ...], kw: dict) -> list:
    """The runs of a sweep from its grid file and options (`sweep` and `status` take the same)."""
    from ssl_bench.method import method_names
    from ssl_bench.sweeps.grid import Grid, load_grid_file, parse_method_params

    ctx = click.get_current_context()
    given = {name for name in kw if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE}
    shared = model_dataset_kwargs(kw)
    common = {
        k: shared[k]
        for k in (
            "steps",
            "lr",
            "val_size",
            "exclude_labeled",
            "model_options",
            "dataset_options",
            "data_dir",
            "download",
            "device",
        )
        if k in given
    }
    if given & set(PROTOCOL_OPTIONS):
        common["protocol"] = shared["protocol"]
    axes = {
        "methods": split_list(methods, "--methods") if methods is not None else None,
        "seeds": parse_seeds(seeds) if seeds is not None else None,
        "datasets": [kw["dataset"]] if kw["dataset"] else None,
        "labels": [shared["labels"]] if kw["labels"] else None,
        "models": [kw["model"]] if kw["model"] else None,
    }
    if grid:
        spec_grid = load_grid_file(Path(grid), {**axes, **common})
    else:
        if not kw["dataset"] or not kw["labels"]:
            raise UserError("sweep needs --dataset and --labels (or a grid file)")
        spec_grid = Grid(
            methods=tuple(axes["methods"] or method_names()),
            datasets=tuple(axes["datasets"]),
            labels=tuple(axes["labels"]),
            seeds=tuple(axes["seeds"] or (0, 1, 2)),
            models=tuple(axes["models"] or (None,)),
            common=common,
        )
    if params:
        extra = parse_method_params(parse_assignments(params, "-p"), spec_grid.methods)
        spec_grid = dataclasses.replace(spec_grid, params=merge_params(spec_grid.params, extra))
    specs = spec_grid.specs()
    return specs


def split_list(text: str, option: str) -> list[str]:
    """`"a, b"` -> `["a", "b"]`; a list with nothing in it is refused (it would run nothing, or silently all)."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise UserError(
            f"{option} is empty; give a comma-separated list, "
            f"e.g. {option} {'0,1,2' if option == '--seeds' else 'supervised,dninv'}"
        )
    return parts


def parse_seeds(text: str) -> list[int]:
    seeds = []
    for part in split_list(text, "--seeds"):
        try:
            seeds.append(parse_int(part))
        except ValueError:
            raise UserError(f"--seeds expects comma-separated whole numbers (ASCII digits 0-9), got {part!r}") from None
    return seeds


def merge_params(a: dict, b: dict) -> dict:
    merged = {m: dict(kv) for m, kv in a.items()}
    for m, kv in b.items():
        merged.setdefault(m, {}).update(kv)
    return merged


def summary_line(result: dict) -> str:
    line = (
        f"{result['method']} on {result['dataset']} "
        f"({result['labels'] or 'all'} labels, {result['model']}, seed {result['seed']}): "
        f"test acc {100 * result['test_acc']:.2f}% at best val "
        f"(step {result['best_step']}, val {100 * result['val_acc_best']:.2f}%), "
        f"{100 * result['test_acc_last']:.2f}% at last step; {result['wall_time_s']:.1f} s on {result['device']}"
    )
    if "test_acc_recording" in result:
        line += f"; per recording {100 * result['test_acc_recording']:.2f}%"
    return line


@cli.command(name="list")
@click.argument("what", type=click.Choice(["methods", "datasets", "models", "all"]), default="all")
@click.option(
    "--dataset", default="digits", show_default=True, help="For models: count parameters for this dataset's inputs."
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="For datasets: the root holding one folder per dataset [$SSL_BENCH_DATA or ~/.cache/ssl-bench/data].",
)
def list_(what: str, dataset: str, data_dir: str | None) -> None:
    """List the registered methods, datasets and models.

    \b
    Example:
        ssl-bench list methods
        ssl-bench list models --dataset digits
    """
    from ssl_bench import catalog

    sections = ["methods", "datasets", "models"] if what == "all" else [what]
    for section in sections:
        if len(sections) > 1:
            click.echo(f"# {section}")
        if section == "methods":
            rows = catalog.method_rows()
        elif section == "datasets":
            rows = catalog.dataset_rows(not_empty(data_dir, "--data-dir"))
        else:
            rows = catalog.model_rows(dataset)
        click.echo(catalog.format_table(rows))


@cli.command()
@click.argument("runs_dir", metavar="RUNS_FOLDER", type=click.Path(exists=True, file_okay=False))
@click.argument("grid", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--methods",
    default=None,
    help="Comma-separated methods (with --dataset and --labels: the sweep's runs) [all registered].",
)
@click.option("--seeds", default=None, help="Comma-separated seeds [0,1,2].")
@functools.partial(run_options, required=False)
@click.option(
    "-p", "params", multiple=True, metavar="METHOD.KEY=VALUE", help="A method's config field, as in sweep (repeatable)."
)
def status(
    runs_dir: str, grid: str | None, methods: str | None, seeds: str | None, params: tuple[str, ...], **kw
) -> None:
    """How far the runs in RUNS_FOLDER are, per group: complete, flagged, damaged, running, interrupted, failed.

    Read from the run folders alone (a cluster sweep's jobs are not asked). With the sweep's grid file or
    its options (as given to `sweep`, without --out), only that sweep's runs are counted, and those
    without a folder yet as not started.

    \b
    Example:
        ssl-bench status runs/demo
        ssl-bench status runs/grid examples/grids/digits.toml
        ssl-bench status runs/demo --methods supervised,entmin --dataset digits --labels 50 --seeds 0,1,2
    """
    from ssl_bench.catalog import format_table
    from ssl_bench.protocol import resolve
    from ssl_bench.sweeps.status import status as run_status
    from ssl_bench.sweeps.status import totals

    ctx = click.get_current_context()
    sweep_given = grid or any(
        ctx.get_parameter_source(n) is click.core.ParameterSource.COMMANDLINE
        for n in ("methods", "seeds", "dataset", "labels", "params")
    )
    resolved = None
    if sweep_given:
        specs = grid_specs(grid, methods, seeds, params, kw)
        resolved = [
            resolve(dataclasses.replace(spec, device="cpu")) for spec in specs
        ]  # the run id does not depend on the device
    result = run_status(Path(runs_dir), resolved)
    for name in result.unreadable:
        click.echo(f"Warning: {name}: no readable config.json; not counted", err=True)
    for name, why in result.damaged.items():
        click.echo(
            f"Warning: {name}: damaged record, {why}; counted as damaged, not complete "
            "(report skips it; `run --force` runs it again)",
            err=True,
        )
    if not result.rows:
        click.echo(f"no runs in {runs_dir}")
        return
    click.echo(format_table(result.rows))
    total = totals(result.rows)
    click.echo(", ".join(f"{v} {k}" for k, v in total.items() if k != "total" and v) + f" of {total['total']} runs")


status.params = [
    p for p in status.params if p.name not in ("out", "state_every", "log")
]  # RUNS_FOLDER is the folder; nothing trains


cli.add_command(report_command)
cli.add_command(reconstruct_command)


def main() -> None:
    sigterm_raises()  # SIGTERM stops like Ctrl-C (exit 143), whatever is running
    cli(prog_name="ssl-bench")


if __name__ == "__main__":
    sys.exit(main())
