"""`python -m ssl_bench.usb` on untrusted and bad input: config files are read as plain data (ruamel's safe
loader, never USB's unsafe reader), and every mistake is one line `Error: …` with exit code 2 (docs/usb.md,
docs/errors.md). No training: each case stops before USB builds data or a network, or at the data.

The payloads are live: `test_payloads_run_under_an_unsafe_loader` loads each with ruamel's unsafe loader (what
USB's `over_write_args_from_file` uses) and sees the marker file appear, so "the marker does not exist" after
the runner is a real check.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from ruamel.yaml import YAML
from ruamel.yaml.constructor import ConstructorError

from ssl_bench import usb
from ssl_bench.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "usb" / "dninv_cifar10_40_0.yaml"

# Each payload would create MARKER: directly (os.system, subprocess), or by importing `evil_mod`, a module
# that creates it when imported (what `!!python/name:`, `!!python/module:` and `!!python/object/new:` do).
PAYLOADS = {
    "apply os.system in a value": "seed: !!python/object/apply:os.system ['touch MARKER']\n",
    "apply subprocess in a nested list": "gamma: [1, [2, !!python/object/apply:subprocess.call [[touch, MARKER]]]]\n",
    "new in a value": "seed: !!python/object/new:evil_mod.Boom []\n",
    "name in a key": "!!python/name:evil_mod.boom : 1\n",
    "module import in a value": "seed: !!python/module:evil_mod\n",
    "apply in a nested mapping": "gamma: {conv: !!python/object/apply:os.system ['touch MARKER']}\n",
}
EVIL_MOD = "from pathlib import Path\nPath({marker!r}).touch()\nboom = print\nclass Boom:\n    pass\n"


@pytest.fixture
def evil(tmp_path, monkeypatch):
    """tmp_path holding `evil_mod` (importable) and the path of the marker no payload may create."""
    marker = tmp_path / "MARKER"
    (tmp_path / "evil_mod.py").write_text(EVIL_MOD.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield marker
    sys.modules.pop("evil_mod", None)


def payload(name: str, marker: Path) -> str:
    return PAYLOADS[name].replace("MARKER", str(marker))


def fails(argv: list[str], capsys) -> str:
    """`usb.main(argv)` ends with exit code 2 and exactly one line `Error: …` on stderr; returns that line."""
    with pytest.raises(SystemExit) as exit_info:
        usb.main(argv)
    captured = capsys.readouterr()
    assert exit_info.value.code == 2
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), captured.err
    return lines[0]


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning", "ignore::UserWarning")
@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_payloads_run_under_an_unsafe_loader(name, evil):
    """The control: USB's kind of reader (ruamel, unsafe) runs each payload."""
    YAML(typ="unsafe", pure=True).load(payload(name, evil))
    assert evil.exists()


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_tagged_config_runs_nothing(name, evil, capsys):
    path = evil.parent / "tagged.yaml"
    path.write_text(payload(name, evil))
    line = fails(["--c", str(path)], capsys)
    assert "the YAML tag !!python/" in line and "is refused" in line and str(path) in line
    assert not evil.exists() and "evil_mod" not in sys.modules


@pytest.mark.parametrize("name", ["apply os.system in a value", "name in a key"])
def test_tag_in_a_copy_of_the_shipped_config_runs_nothing(name, evil, capsys):
    text = EXAMPLE.read_text().replace("seed: 0\n", payload(name, evil))
    assert text != EXAMPLE.read_text()
    path = evil.parent / "dninv_cifar10_40_0.yaml"
    path.write_text(text)
    line = fails(["--c", str(path)], capsys)
    assert "line 48: the YAML tag !!python/" in line
    assert not evil.exists() and "evil_mod" not in sys.modules


def test_tag_in_an_override_runs_nothing(evil, capsys):
    line = fails(["--c", str(EXAMPLE), "--seed", f"!!python/object/apply:os.system ['touch {evil}']"], capsys)
    assert line == (
        "Error: --seed: the YAML tag !!python/object/apply:os.system is refused: a config is read as plain "
        "data (text, numbers, booleans, lists, mappings), tags construct no objects"
    )
    assert not evil.exists()


def test_end_to_end_tagged_copy_of_the_shipped_config(evil):
    """One real process: `python -m ssl_bench.usb` prints one line and exits with 2; the payload never ran."""
    path = evil.parent / "dninv_cifar10_40_0.yaml"
    path.write_text(EXAMPLE.read_text() + payload("apply os.system in a value", evil).replace("seed", "num_workers"))
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT), str(evil.parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "ssl_bench.usb", "--c", str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=evil.parent,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"Error: {path}, line 55: the YAML tag !!python/object/apply:os.system is refused: a config "
        "is read as plain data (text, numbers, booleans, lists, mappings), tags construct no objects"
    ]
    assert done.stdout == "" and not evil.exists()


def test_debug_shows_the_cause(evil):
    path = evil.parent / "tagged.yaml"
    path.write_text(payload("apply os.system in a value", evil))
    with pytest.raises(UserError, match="is refused") as info:
        usb.main(["--c", str(path), "--debug"])
    assert isinstance(info.value.__cause__, ConstructorError) and not evil.exists()


def test_no_semilearn_reader_is_used(evil, monkeypatch, capsys):
    """USB's file reader is never called: the runner hands USB's `get_config` a dict."""
    import semilearn.core.utils.misc

    def refuse(*args):
        raise AssertionError("semilearn's unsafe reader was called")

    monkeypatch.setattr(semilearn.core.utils.misc, "over_write_args_from_file", refuse)
    run = usb.run
    monkeypatch.setattr(usb, "run", lambda config: config)  # stop before training
    config = usb.main(["--c", str(EXAMPLE), "--alpha", "0.5"])
    assert type(config) is dict and config["alpha"] == 0.5 and config["algorithm"] == "dninv"
    with pytest.raises(TypeError, match="plain dict"):
        run(str(EXAMPLE))


BAD_FILES = [
    # (file name, bytes or None for "no file", what the line says)
    ("missing.yaml", None, "cannot read the config file {path}: No such file or directory"),
    ("empty.yaml", b"", "{path} is empty"),
    ("comments.yaml", b"# only a comment\n", "{path} is empty"),
    ("bad.yaml", b"algorithm: dninv\nalpha: [0.7\n", "{path}, line 3: not valid YAML: expected ',' or ']'"),
    ("nested.yaml", b"alpha: beta: 1\n", "{path}, line 1: not valid YAML: mapping values are not allowed here"),
    (
        "list.yaml",
        b"- algorithm: dninv\n- alpha: 0.7\n",
        "{path}: a USB config is a mapping of arguments (key: value lines), got a list",
    ),
    ("text.yaml", b"dninv\n", "{path}: a USB config is a mapping of arguments (key: value lines), got a text"),
    ("dup.yaml", b"alpha: 0.7\nalpha: 0.5\n", '{path}, line 2: not valid YAML: found duplicate key "alpha"'),
    ("latin1.yaml", "save_name: caf\xe9\n".encode("latin-1"), "{path}: not UTF-8 text"),
    ("intkey.yaml", b"1: 2\n", "{path}: argument names are text, got 1"),
    ("local.yaml", b"alpha: !local 1\n", "{path}, line 1: the YAML tag !local is refused"),
    (
        "clip.yaml",
        b"algorithm: dninv\nclip: 0.0\n",
        "{path}: unknown argument 'clip', which USB never reads; did you mean clip_grad?",
    ),
    ("algo.yaml", b"algorithm: dninvv\n", "{path}: unknown algorithm 'dninvv'; USB knows "),
    ("dataset.yaml", b"algorithm: dninv\ndataset: cifar11\n", "{path}: unknown dataset 'cifar11'; USB knows "),
    ("epoch.yaml", b"algorithm: dninv\nepoch: 0\n", "{path}: epoch must be at least 1, got 0"),
    (
        "iters.yaml",
        b"algorithm: dninv\nnum_train_iter: 1e5\n",
        "{path}: num_train_iter expects a whole number, got 100000.0",
    ),
]


@pytest.mark.parametrize("name, content, message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_config_file_is_one_line(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    line = fails(["--c", str(path)], capsys)
    assert line.startswith("Error: " + message.format(path=path)), line


def test_config_folder_is_one_line(tmp_path, capsys):
    assert fails(["--c", str(tmp_path)], capsys) == f"Error: cannot read the config file {tmp_path}: Is a directory"


BAD_OVERRIDES = [
    (["--epoch", "abc"], "--epoch: epoch expects a whole number, got 'abc'"),
    (["--lr", "fast"], "--lr: lr expects a number, got 'fast'"),
    (["--use_cat", "maybe"], "--use_cat: use_cat expects true or false, got 'maybe'"),
    (["--lr", ".nan"], "--lr: lr expects a number, got nan"),
    (["--save_dir", "[a, b]"], "--save_dir: save_dir expects text, got ['a', 'b']"),
    (["--alpah", "0.5"], "--alpah: unknown argument 'alpah', which USB never reads; did you mean alpha"),
    (["--alpha"], "expected --key value pairs after the config file, got --alpha"),
    (["alpha", "0.5"], "expected --key value pairs after the config file, got alpha 0.5"),
    (["--gamma", "{conv: 1"], "--gamma: not valid YAML: "),
    (["--load_path", "5"], "--load_path: load_path expects text, got 5"),
    (["--gpu", "first"], "--gpu: gpu expects a whole number, got 'first'"),
]


@pytest.mark.parametrize("argv, message", BAD_OVERRIDES, ids=[" ".join(a) for a, _ in BAD_OVERRIDES])
def test_bad_override_is_one_line(capsys, argv, message):
    line = fails(["--c", str(EXAMPLE), *argv], capsys)
    assert line.startswith("Error: " + message), line


def test_dninv_argument_errors_are_one_line(tmp_path, capsys):
    """dninv's own arguments are checked by ssl-bench's config (before USB builds its data)."""
    line = fails(
        ["--c", str(EXAMPLE), "--alpha", "1.5", "--save_dir", str(tmp_path), "--data_dir", str(tmp_path)], capsys
    )
    assert "alpha must stay in [0, 1]" in line


def test_missing_data_names_the_files(tmp_path, monkeypatch, capsys):
    """No network (urlopen fails, as on a machine without internet): the line says which files go where."""

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network (test)")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    argv = [
        "--c",
        str(EXAMPLE),
        "--save_dir",
        str(tmp_path / "saved"),
        "--data_dir",
        str(tmp_path / "data"),
        "--use_tensorboard",
        "false",
    ]
    line = fails(argv, capsys)
    folder = tmp_path / "data" / "cifar10" / "cifar-10-batches-py"
    assert line == (
        "Error: USB could not download cifar10 (no network (test)): "
        "expected data_batch_1, data_batch_2, data_batch_3, "
        f"data_batch_4, data_batch_5, test_batch, batches.meta in {folder}; download cifar-10-python.tar.gz from "
        "https://www.cs.toronto.edu/~kriz/cifar.html and extract it there, or set data_dir"
    )


def test_unwritable_save_dir_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    line = fails(["--c", str(EXAMPLE), "--save_dir", str(tmp_path / "file"), "--use_tensorboard", "false"], capsys)
    assert line.startswith("Error: I/O error ") and str(tmp_path / "file") in line


def test_malicious_resume_checkpoint_is_refused(tmp_path, monkeypatch, capsys):
    """USB's `load_model` calls `torch.load` without weights_only: torch's default (True) refuses the payload."""
    import pickle

    marker = tmp_path / "MARKER"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    checkpoint = tmp_path / "latest_model.pth"
    checkpoint.write_bytes(pickle.dumps({"model": Payload()}))

    class Built:  # what get_algorithm returns, without data or a network
        def load_model(self, path):
            return usb.AlgorithmBase.load_model(self, path)

    monkeypatch.setattr(usb, "get_algorithm", lambda *args: Built())
    monkeypatch.setattr(usb.torch.cuda, "is_available", lambda: False)
    argv = [
        "--c",
        str(EXAMPLE),
        "--save_dir",
        str(tmp_path),
        "--load_path",
        str(checkpoint),
        "--use_tensorboard",
        "false",
    ]
    line = fails(argv, capsys)
    assert line == (
        f"Error: cannot resume from load_path {checkpoint} (it holds objects other than tensors and plain values, "
        "which torch.load(weights_only=True) refuses); delete it or set resume: False"
    )
    assert not marker.exists()
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    assert fails(argv, capsys).startswith("Error: unset TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    assert not marker.exists()
