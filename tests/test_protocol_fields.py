"""The protocol is defined once (issue 26): a `ProtocolConfig` field's declaration (type, default, doc) gives
its command-line option with choices, help and checks, its place in records and fingerprints, and its
one-line error for a bad value; nothing else has to spell it."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

import click
import pytest
import torch
from click.testing import CliRunner

from ssl_bench import records
from ssl_bench.cli import PROTOCOL_OPTIONS, cli
from ssl_bench.config import Range, build_config, config_options, option_fields, setting
from ssl_bench.errors import UserError
from ssl_bench.protocol import LATER_FIELDS, ProtocolConfig, later_fields, protocol_fields, recorded_fields

CPU = torch.device("cpu")
NOT_OPTIONS = {  # set through a grid file's protocol table or config.json; steps, lr, seed: RunSpec's own options
    "steps",
    "lr",
    "seed",
    "weight_decay",
    "clip_grad_norm",
    "eval_batch",
    "collapse_patience",
}


def with_fields(*fields) -> type:
    """ProtocolConfig with more fields, each one declaration."""
    return dataclasses.make_dataclass("Extended", fields, bases=(ProtocolConfig,), frozen=True)


EXTENDED = with_fields(
    ("mixing", Literal["off", "mixup", "cutmix"], setting("off", "Batch mixing of every method's inputs")),
    ("ema", Annotated[float, Range(0, 1)], setting(0.0, "EMA decay of the evaluated weights; 0 = none", later=True)),
)


def command_of(cls: type) -> click.Command:
    """A command taking `cls`'s options, the way `run` and `sweep` take ProtocolConfig's; it prints the config."""

    def body(**kw):
        given = {k: v for k, v in kw.items() if v is not None}
        click.echo(repr(build_config(cls, {"steps": 10, "lr": 0.1, **given}, "protocol")))

    for option in reversed(config_options(cls)):
        body = option(body)
    return click.command()(body)


def test_a_new_field_is_one_declaration():
    assert option_fields(EXTENDED)[-2:] == ("mixing", "ema")
    command = command_of(EXTENDED)
    help_text = CliRunner().invoke(command, ["--help"]).output
    assert "--mixing [off|mixup|cutmix]" in help_text and "Batch mixing of every method's inputs [off]." in help_text
    assert "--batch-lb" in help_text and "--ema FLOAT" in help_text and "[0.0<=x<=1.0]" in help_text
    ok = CliRunner().invoke(command, ["--mixing", "cutmix", "--batch-lb", "16"])
    assert ok.exit_code == 0 and "mixing='cutmix'" in ok.output and "batch_lb=16" in ok.output, ok.output
    bad = CliRunner().invoke(command, ["--mixing", "mixdown"])
    assert (
        bad.exit_code == 2
        and "Invalid value for '--mixing': 'mixdown' is not one of 'off', 'mixup', 'cutmix'" in bad.output
    )
    assert (
        "Invalid value for '--ema': 1.5 is not in the range 0.0<=x<=1.0"
        in CliRunner().invoke(command, ["--ema", "1.5"]).output
    )


def test_a_new_fields_bad_value_is_one_line_naming_it():
    with pytest.raises(UserError, match=r"^protocol: mixing must be one of off, mixup, cutmix, got 'mixdown'$"):
        build_config(EXTENDED, {"steps": 10, "lr": 0.1, "mixing": "mixdown"}, "protocol")
    with pytest.raises(UserError, match=r"^protocol: ema must be in \[0, 1\], got 1.5$"):
        build_config(EXTENDED, {"steps": 10, "lr": 0.1, "ema": "1.5"}, "protocol")
    with pytest.raises(ValueError, match=r"^ema must be in \[0, 1\], got -0.1$"):  # built in Python: the same check
        EXTENDED(steps=10, lr=0.1, ema=-0.1)


def test_a_new_field_is_fingerprinted_and_a_later_one_only_off_its_default():
    base = protocol_fields(ProtocolConfig(steps=10, lr=0.1), CPU)
    extended = protocol_fields(EXTENDED(steps=10, lr=0.1), CPU)
    assert later_fields(EXTENDED) == {**LATER_FIELDS, "ema": 0.0}
    assert extended == {**base, "mixing": "off"}  # a field added later would need `later=True` to keep old ones
    assert protocol_fields(EXTENDED(steps=10, lr=0.1, ema=0.5), CPU) == {**extended, "ema": 0.5}
    assert records.fingerprint(recorded_fields(EXTENDED(steps=10, lr=0.1, mixing="mixup"))) != records.fingerprint(
        extended
    )


def test_every_field_has_a_doc_and_an_option_unless_declared_otherwise():
    fields = dataclasses.fields(ProtocolConfig)
    assert all(f.metadata.get("doc") for f in fields), [f.name for f in fields if not f.metadata.get("doc")]
    assert {f.name for f in fields} - set(PROTOCOL_OPTIONS) == NOT_OPTIONS
    for command in ("run", "sweep", "status"):
        names = {p.name for p in cli.commands[command].params}
        assert set(PROTOCOL_OPTIONS) <= names, command
    help_text = CliRunner().invoke(cli, ["run", "--help"]).output
    for name in PROTOCOL_OPTIONS:
        flag = "--" + name.replace("_", "-")
        assert flag in help_text, flag
    assert "--compile / --no-compile" in help_text and "[no-compile]" in help_text


def test_later_fields_are_declared_with_the_field():
    assert LATER_FIELDS == {"precision": "fp32", "compile": False, "augment": "none"}
    assert "precision" not in recorded_fields(ProtocolConfig(steps=1, lr=1.0))
