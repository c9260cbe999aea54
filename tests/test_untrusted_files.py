"""No loader that runs code from a file is reachable from ssl-bench's code (docs/errors.md, "Untrusted files").

Configs, grids, records, checkpoints and data files are things people download and share. This test reads
every module of `ssl_bench/` and `ssl_bench_plugins/` (their syntax trees, so comments and docstrings do not count
and a call split over lines does) and refuses:
- `yaml.load` / `load_all` without a safe `Loader`, `yaml.unsafe_load` / `full_load`, `ruamel.yaml.load`, a
  `YAML(…)` without `typ="safe"`, and importing those loaders by name;
- `pickle.load` / `loads`, any `Unpickler` (also `dill`, `cloudpickle`, `joblib`, `marshal`, `shelve`,
  `pandas.read_pickle`, `numpy.load(allow_pickle=True)`), except the one restricted CIFAR unpickler
  `ssl_bench.data.vision._ArrayUnpickler`, which builds numpy arrays only (checked below);
- `torch.load(…)` without `weights_only=True`, and `from torch import load`;
- the builtins `eval(…)`, `exec(…)` (a method named `eval`, such as `model.eval()`, is fine);
- semilearn's config reader `over_write_args_from_file` (`ruamel.yaml.load` with the unsafe `Loader`).

`test_the_checker_finds_each_kind` feeds the checker one snippet of each kind, so the scan can fail.
"""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("ssl_bench", "ssl_bench_plugins")
# The only exception, by file and name: the CIFAR unpickler whose find_class allows numpy arrays only.
ALLOWED_UNPICKLERS = {("ssl_bench/data/vision.py", "_ArrayUnpickler")}

PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}
YAML_MODULES = {"yaml", "ruamel.yaml", "ruamel_yaml"}
YAML_UNSAFE = {
    "load",
    "load_all",
    "unsafe_load",
    "unsafe_load_all",
    "full_load",
    "full_load_all",
    "Loader",
    "UnsafeLoader",
    "FullLoader",
}
UNSAFE_FUNCTIONS = {"over_write_args_from_file": "semilearn's config reader, ruamel.yaml.load with the unsafe Loader"}
SAFE_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


def dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """`a.b.c` for a Name/Attribute chain, with import aliases resolved (`import pickle as pk` → `pickle`)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_calls(source: str, filename: str) -> list[str]:
    """`filename:line: what` for each unsafe loader used in `source`."""
    tree = ast.parse(source, filename)
    aliases: dict[str, str] = {}
    found: list[str] = []

    def flag(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{node.lineno}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
                if node.module in PICKLE_MODULES and a.name not in (
                    "dumps",
                    "dump",
                    "PicklingError",
                    "UnpicklingError",
                    "HIGHEST_PROTOCOL",
                ):
                    flag(node, f"from {node.module} import {a.name}")
                if node.module in YAML_MODULES and a.name in YAML_UNSAFE:
                    flag(node, f"from {node.module} import {a.name}")
                if a.name in UNSAFE_FUNCTIONS:
                    flag(node, f"{a.name}: {UNSAFE_FUNCTIONS[a.name]}")
                if node.module == "torch" and a.name == "load":
                    flag(node, "from torch import load (call torch.load(..., weights_only=True))")
    allowed_here = {name for file, name in ALLOWED_UNPICKLERS if file == filename}
    allowed_bases = {
        id(b)
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef) and node.name in allowed_here
        for b in node.bases
    }
    for node in ast.walk(tree):
        if isinstance(node, (ast.Attribute, ast.Name)) and id(node) not in allowed_bases:
            name = dotted(node, aliases) or ""
            if name.split(".")[-1] in ("Unpickler", "_Unpickler") and name.split(".")[0] in PICKLE_MODULES | {
                "Unpickler",
                "_Unpickler",
            }:
                flag(node, f"{name} (only {sorted(ALLOWED_UNPICKLERS)} may unpickle)")
        if isinstance(node, ast.Attribute) and node.attr in UNSAFE_FUNCTIONS:
            flag(node, f"{node.attr}: {UNSAFE_FUNCTIONS[node.attr]}")
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func, aliases) or ""
        module, _, attr = name.rpartition(".")
        if isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec"):
            flag(node, f"{node.func.id}(...)")
        elif module in PICKLE_MODULES and attr in ("load", "loads", "Unpickler", "open"):
            flag(node, f"{name}(...)")
        elif name in ("pandas.read_pickle", "pd.read_pickle"):
            flag(node, f"{name}(...)")
        elif name in ("numpy.load", "np.load") and is_true(keyword(node, "allow_pickle")):
            flag(node, f"{name}(..., allow_pickle=True)")
        elif module in YAML_MODULES and attr in ("unsafe_load", "unsafe_load_all", "full_load", "full_load_all"):
            flag(node, f"{name}(...)")
        elif module in YAML_MODULES and attr in ("load", "load_all"):
            loader = keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            loader_name = (dotted(loader, aliases) or "").rpartition(".")[2] if loader is not None else ""
            if module.startswith("ruamel") or loader_name not in SAFE_LOADERS:
                flag(node, f"{name}(...) without a safe Loader")
        elif attr == "YAML" and module in YAML_MODULES | {""} or name == "YAML":
            typ = keyword(node, "typ")
            if not (isinstance(typ, ast.Constant) and typ.value == "safe"):
                flag(node, 'YAML(...) without typ="safe"')
        elif name == "torch.load" and not is_true(keyword(node, "weights_only")):
            flag(node, "torch.load(...) without weights_only=True")
    return found


def sources() -> list[Path]:
    files = sorted(p for d in SCANNED for p in (ROOT / d).rglob("*.py"))
    assert len(files) > 20, "the scan found too few modules: wrong root?"
    return files


def test_no_unsafe_loader_in_ssl_bench_or_plugins():
    found = [
        hit
        for path in sources()
        for hit in unsafe_calls(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())
    ]
    assert found == [], "unsafe loaders (docs/errors.md, Untrusted files):\n" + "\n".join(found)


def test_the_allowed_unpickler_is_still_where_it_is_said_to_be():
    """The exception names a class that exists, subclasses pickle.Unpickler and overrides find_class."""
    for file, name in ALLOWED_UNPICKLERS:
        tree = ast.parse((ROOT / file).read_text(encoding="utf-8"))
        classes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == name]
        assert len(classes) == 1 and any(
            isinstance(f, ast.FunctionDef) and f.name == "find_class" for f in classes[0].body
        )


def test_the_allowed_unpickler_builds_numpy_arrays_only(tmp_path):
    import io

    import numpy as np

    from ssl_bench.data.vision import _ArrayUnpickler

    assert {module.split(".")[0] for module, _ in _ArrayUnpickler.ALLOWED} <= {"numpy", "_codecs"}
    batch = {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}
    assert _ArrayUnpickler(io.BytesIO(pickle.dumps(batch, protocol=2)), encoding="latin1").load()["labels"] == [0, 1]
    marker = tmp_path / "MARKER"

    class Payload:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        _ArrayUnpickler(io.BytesIO(pickle.dumps(Payload())), encoding="latin1").load()
    assert not marker.exists()


UNSAFE = {
    "yaml.load": "import yaml\nyaml.load(text, Loader=yaml.Loader)\n",
    "yaml.load no loader": "import yaml\nyaml.load(text)\n",
    "yaml.unsafe_load": "import yaml\nyaml.unsafe_load(text)\n",
    "yaml.full_load": "import yaml\nyaml.full_load(text)\n",
    "ruamel.yaml.load": "import ruamel.yaml\nruamel.yaml.load(text, Loader=ruamel.yaml.Loader)\n",
    "ruamel alias": "import ruamel.yaml as yaml\nyaml.load(text, Loader=yaml.Loader)\n",
    "YAML()": "from ruamel.yaml import YAML\nYAML().load(text)\n",
    "YAML unsafe": "from ruamel.yaml import YAML\nYAML(typ='unsafe').load(text)\n",
    "ruamel.yaml.YAML rt": "import ruamel.yaml\nruamel.yaml.YAML(typ='rt').load(text)\n",
    "from yaml import load": "from yaml import load\n",
    "pickle.load": "import pickle\npickle.load(f)\n",
    "pickle.loads": "import pickle\npickle.loads(b)\n",
    "pickle alias": "import pickle as pk\npk.loads(b)\n",
    "from pickle import loads": "from pickle import loads\n",
    "Unpickler": "import pickle\npickle.Unpickler(f).load()\n",
    "Unpickler subclass": "import pickle\nclass Mine(pickle.Unpickler):\n    pass\n",
    "the allowed name elsewhere": "import pickle\nclass _ArrayUnpickler(pickle.Unpickler):\n    pass\n",
    "dill": "import dill\ndill.load(f)\n",
    "numpy allow_pickle": "import numpy as np\nnp.load(p, allow_pickle=True)\n",
    "torch.load": "import torch\ntorch.load(p)\n",
    "torch.load False": "import torch\ntorch.load(p, weights_only=False)\n",
    "torch.load multi-line": "import torch\ntorch.load(\n    p,\n    map_location='cpu',\n)\n",
    "from torch import load": "from torch import load\n",
    "semilearn's reader": "from semilearn.core.utils import over_write_args_from_file\n",
    "semilearn's reader by attribute": "import semilearn\n"
    "semilearn.core.utils.misc.over_write_args_from_file(ns, path)\n",
    "eval": "eval(text)\n",
    "exec": "exec(code)\n",
}
SAFE = {
    "YAML safe": "from ruamel.yaml import YAML\nYAML(typ='safe', pure=True).load(text)\n",
    "yaml.safe_load": "import yaml\nyaml.safe_load(text)\n",
    "yaml.load SafeLoader": "import yaml\nyaml.load(text, Loader=yaml.SafeLoader)\n",
    "torch.load weights_only": "import torch\ntorch.load(p, map_location='cpu', weights_only=True)\n",
    "model.eval": "model.eval()\n",
    "docstring": '"""pickle.load(f), yaml.load(t), eval(x), torch.load(p)"""\n',
    "pickle.dumps": "import pickle\npickle.dumps(x)\nexcept_ = pickle.UnpicklingError\n",
    "numpy load": "import numpy as np\nnp.load(p)\n",
}


@pytest.mark.parametrize("name", sorted(UNSAFE))
def test_the_checker_finds_each_kind(name):
    assert unsafe_calls(UNSAFE[name], "ssl_bench/example.py"), name


@pytest.mark.parametrize("name", sorted(SAFE))
def test_the_checker_passes_safe_calls(name):
    assert unsafe_calls(SAFE[name], "ssl_bench/example.py") == []
