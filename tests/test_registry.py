"""The method registry: entry points, unknown / duplicate / broken plugins, an external distribution."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from ssl_bench.cli import cli
from ssl_bench.errors import UserError
from ssl_bench.method import SSLMethod, load_method, method_names
from tests.conftest import fake_distribution

GOOD_MODULE = '''
import torch.nn.functional as F
from ssl_bench import SSLMethod

class Other(SSLMethod):
    terms = ("ce",)
    def loss(self, model, batch, progress):
        ce = F.cross_entropy(model(batch.x_lb), batch.y_lb)
        return ce, {"ce": ce.detach()}
'''


def test_builtin_methods_come_from_entry_points():
    assert {"supervised", "entmin", "pimodel", "dninv"} <= set(method_names())
    cls = load_method("supervised")
    assert issubclass(cls, SSLMethod) and cls.__module__ == "ssl_bench_plugins.supervised"


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(UserError, match=r"unknown method 'nope'; known methods: .*supervised"):
        load_method("nope")


def test_duplicate_name_is_an_error(tmp_path, fresh_registry):
    fake_distribution(tmp_path / "a", "dist-a", {"twin": "mod_a:Other"}, {"mod_a": GOOD_MODULE})
    fake_distribution(tmp_path / "b", "dist-b", {"twin": "mod_b:Other"}, {"mod_b": GOOD_MODULE})
    fresh_registry.syspath_prepend(str(tmp_path / "a"))
    fresh_registry.syspath_prepend(str(tmp_path / "b"))
    from ssl_bench.method import refresh_methods

    refresh_methods()
    with pytest.raises(UserError, match=r"'twin' is registered twice: by dist-[ab].*and by dist-[ab]"):
        load_method("supervised")


def test_broken_plugin_names_its_distribution_and_spares_the_others(tmp_path, fresh_registry):
    fake_distribution(tmp_path, "broken-dist", {"broken": "mod_broken:Method"}, {"mod_broken": "raise ImportError('missing dependency xyz')\n"})
    fresh_registry.syspath_prepend(str(tmp_path))
    from ssl_bench.method import refresh_methods

    refresh_methods()
    assert "broken" in method_names()
    with pytest.raises(UserError, match=r"method 'broken' from distribution broken-dist failed to import.*missing dependency xyz"):
        load_method("broken")
    assert load_method("supervised").__name__ == "Supervised"
    listing = CliRunner().invoke(cli, ["list", "methods"])
    assert listing.exit_code == 0
    assert "BROKEN" in listing.output and "supervised" in listing.output


def test_external_plugin_is_found_and_runs(example_plugin, tmp_path):
    assert "softpl" in method_names()
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="ssl_bench.methods") if e.name == "softpl"]
    assert ep.dist.name == "ssl-bench-example-plugin"
    result = CliRunner().invoke(
        cli, ["run", "--method", "softpl", "--dataset", "digits", "--labels", "50", "--steps", "30", "--eval-every", "10", "--out", str(tmp_path), "--quiet", "-p", "T=0.4"]
    )
    assert result.exit_code == 0, result.output
    assert "softpl on digits" in result.output
