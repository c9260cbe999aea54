"""Shared fixtures: tiny runs on `digits`, and the example plugin installed as a real distribution."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ssl_bench.method import refresh_methods

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_PLUGIN = ROOT / "examples" / "plugin-example"


@pytest.fixture(scope="session")
def example_plugin_dir(tmp_path_factory) -> Path:
    """`pip install --target` of examples/plugin-example: a separate distribution with an entry point."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(EXAMPLE_PLUGIN),
        ],
        check=True,
        capture_output=True,
    )
    return target


@pytest.fixture
def example_plugin(example_plugin_dir, monkeypatch):
    """The example plugin importable and discoverable in this process, for one test."""
    monkeypatch.syspath_prepend(str(example_plugin_dir))
    refresh_methods()
    yield example_plugin_dir
    monkeypatch.undo()
    for name in [m for m in sys.modules if m.startswith("ssl_bench_example")]:
        del sys.modules[name]
    refresh_methods()


def fake_distribution(
    root: Path,
    name: str,
    entry_points: dict[str, str],
    modules: dict[str, str] | None = None,
    *,
    group: str = "ssl_bench.methods",
) -> Path:
    """Write an installed distribution (dist-info with entry points of `group`, plus modules) under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    info = root / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{group}]\n{lines}\n")
    for mod, source in (modules or {}).items():
        (root / f"{mod}.py").write_text(source)
    return root


@pytest.fixture
def fresh_registry(monkeypatch):
    """Undo sys.path changes and registry caches after the test."""
    refresh_methods()
    yield monkeypatch
    monkeypatch.undo()
    refresh_methods()
