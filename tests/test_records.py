"""The run records are strict JSON (ssl_bench.records): a value that is not a finite number is `null`.

Python's `json` writes NaN and Infinity as bare tokens by default, which jq, JavaScript and most JSON
libraries refuse; dninv logs a skipped term as NaN ("not computed"), so a run's metrics.jsonl held them.
"""

from __future__ import annotations

import json
import math

from ssl_bench import records
from ssl_bench.protocol import RunSpec, resolve
from ssl_bench.run.training import train


def strict_loads(text: str):
    """`json.loads` that refuses NaN, Infinity and -Infinity, as RFC 8259 parsers do."""

    def refuse(token: str):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_are_written_as_null(tmp_path):
    obj = {"a": math.nan, "b": [1.5, math.inf, {"c": -math.inf}], "d": (2, math.nan), "e": "NaN", "f": 0.0}
    records.write_json(tmp_path / "x.json", obj)
    records.append_jsonl(tmp_path / "x.jsonl", obj)
    want = {"a": None, "b": [1.5, None, {"c": None}], "d": [2, None], "e": "NaN", "f": 0.0}
    assert strict_loads((tmp_path / "x.json").read_text()) == want
    assert [strict_loads(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()] == [want]
    assert records.read_jsonl(tmp_path / "x.jsonl") == [want]


def test_a_run_whose_method_skips_terms_writes_strict_json(tmp_path):
    """dninv at α = 1 (exactly `supervised`) skips its reconstruction and entropy terms: null, not NaN."""
    spec = RunSpec(
        method="dninv",
        dataset="digits",
        labels=50,
        steps=10,
        params={"alpha": 1.0},
        protocol={"eval_every": 5},
        device="cpu",
    )
    train(resolve(spec), tmp_path, show_progress=False)
    (run,) = tmp_path.iterdir()
    rows = [strict_loads(line) for line in (run / records.METRICS).read_text().splitlines()]
    assert [row["step"] for row in rows] == [5, 10]
    assert all(row["rec"] is None and row["ent"] is None and row["ce"] > 0 for row in rows)
    for name in (records.RESULT, records.CONFIG, records.SPLIT):
        strict_loads((run / name).read_text())
