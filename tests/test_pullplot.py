"""The pull plot draws every claim (agrees, breaks, without a rival, NaN) and stays one file."""

import math

from lmbook.engine.pullplot import pull_figure


def _record(claim, measured, kind="agrees", rival=None, passed=True):
    return {
        "chapter": "toy",
        "claim": claim,
        "kind": kind,
        "predicted": 1.0,
        "measured": measured,
        "se": 0.01,
        "allowed": 0.1,
        "rival": rival,
        "passed": passed,
    }


def test_pull_plot_draws_every_kind_of_claim(tmp_path):
    records = [
        _record("close", 1.02, rival=2.0),
        _record("no_rival", 0.95),
        _record("far_rival", 1.0, rival=1e6),
        _record("missing", math.nan, passed=False),
        _record("misses", 3.0, kind="breaks"),
    ] + [_record(f"many{i}", 1.0 + i / 1000) for i in range(150)]
    path = pull_figure(records, tmp_path / "pulls.svg", title="toy")
    svg = path.read_text()
    assert svg.startswith("<?xml") and "</svg>" in svg
    for name in ("toy/close", "toy/misses", "toy/many149", "toy/missing"):
        assert name in svg
