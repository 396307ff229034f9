"""The claim standard as lmbook enforces it: bands from replicates, named budgets, rivals with a
discrimination, breaks, NaN, atomic records, the prediction scale."""

import json
import math

import numpy as np
import pytest
import torch

from lmbook import ClaimFailed, Claims, Estimate, Rival, Tol, UsageError
from lmbook.stats import ALPHA, FAMILY, t_quantile


@pytest.fixture
def claims(tmp_path):
    return Claims("unit", "ci", "cpu", 0, tmp_path / "claims")


def record_file(tmp_path, claim):
    return json.loads((tmp_path / "claims" / f"{claim}.json").read_text())


def normal(n, mean=1.0, sd=0.1, seed=0):
    return (
        torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * sd
        + mean
    )


def test_pass_writes_a_complete_record_and_prints_the_verdict(claims, tmp_path, capsys):
    rec = claims.agrees(
        "c", "x is 1", predicted=1.0, measured=normal(40), systematic=Tol(0.01, "grid error h^2")
    )
    assert rec.passed and capsys.readouterr().out.startswith("PASS c: predicted 1")
    data = record_file(tmp_path, "c")
    for key in (
        "chapter",
        "claim",
        "statement",
        "predicted",
        "measured",
        "se",
        "n",
        "stat_method",
        "stat_band",
        "tolerance",
        "tolerance_origin",
        "systematic_terms",
        "rival",
        "discrimination",
        "passed",
        "profile",
        "device",
        "seed",
        "versions",
        "wall_seconds",
        "allowed",
        "miss",
    ):
        assert key in data
    assert data["n"] == 40 and data["versions"]["torch"]
    assert not list((tmp_path / "claims").glob("*.tmp")), "no temporary file may be left behind"


def test_the_statistical_band_is_computed_from_the_replicates(claims):
    x = normal(30)
    rec = claims.agrees("c", "x is 1", predicted=1.0, measured=x)
    se = x.std().item() / math.sqrt(30)
    assert rec.se == pytest.approx(se)
    assert rec.stat_band == pytest.approx(t_quantile(ALPHA / FAMILY, 29) * se)
    assert rec.allowed == pytest.approx(rec.stat_band) and rec.tolerance == 0


def test_many_replicates_are_grouped_for_skew(claims):
    x = torch.distributions.Exponential(torch.tensor(1.0)).sample((6400,)).double()
    rec = claims.agrees("c", "mean 1", predicted=1.0, measured=x)
    assert "batch means" in rec.stat_method and "32 groups" in rec.stat_method


def test_paired_predictions_band_the_differences(claims):
    base = normal(50, sd=1.0)
    rec = claims.agrees(
        "c", "paired", predicted=base, measured=base + normal(50, 0.0, 0.001, seed=1)
    )
    assert rec.se < 0.001 and "paired" in rec.stat_method


def test_systematic_terms_are_named_and_add(claims):
    budget = Tol(0.01, "Euler eta s/2") + Tol(0.02, "coupling (r-1)/h")
    rec = claims.agrees("c", "x", predicted=1.0, measured=1.02, systematic=budget)
    assert rec.tolerance == pytest.approx(0.03)
    assert [t["origin"] for t in rec.systematic_terms] == ["Euler eta s/2", "coupling (r-1)/h"]
    assert "Euler eta s/2 + coupling (r-1)/h" == rec.tolerance_origin
    with pytest.raises(UsageError, match="origin"):
        Tol(0.1, "")
    with pytest.raises(UsageError, match="non-negative"):
        Tol(-0.1, "o")


def test_fail_raises_with_numbers_and_still_writes(claims, tmp_path):
    with pytest.raises(ClaimFailed) as err:
        claims.agrees("c", "x is 1", predicted=1.0, measured=1.5, systematic=Tol(0.1, "o"))
    msg = str(err.value)
    assert (
        "predicted 1" in msg and "measured 1.5" in msg and "missed by 0.5" in msg and "50.0%" in msg
    )
    assert record_file(tmp_path, "c")["passed"] is False


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_inf_never_pass(claims, tmp_path, bad):
    with pytest.raises(ClaimFailed, match="NaN or infinite"):
        claims.agrees("m", "x", predicted=1.0, measured=bad, systematic=Tol(1e9, "o"))
    with pytest.raises(ClaimFailed):
        claims.agrees("p", "x", predicted=bad, measured=1.0, systematic=Tol(1e9, "o"))
    with pytest.raises(ClaimFailed):
        claims.agrees("s", "x", predicted=1.0, measured=[1.0, bad, 1.0], systematic=Tol(1e9, "o"))
    with pytest.raises(ClaimFailed):
        claims.breaks("b", "x", predicted=1.0, measured=bad)
    assert record_file(tmp_path, "m")["passed"] is False


def test_a_rival_needs_two_bands_of_discrimination(claims):
    rec = claims.agrees(
        "r",
        "x is 1",
        predicted=1.0,
        measured=1.0,
        systematic=Tol(0.1, "o"),
        rival=Rival(1.5, "naive"),
    )
    assert rec.discrimination == pytest.approx(5.0)
    with pytest.raises(ClaimFailed, match="rival 'naive'.*bands from the prediction"):
        claims.agrees(
            "r2",
            "x is 1",
            predicted=1.0,
            measured=1.0,
            systematic=Tol(0.1, "o"),
            rival=Rival(1.15, "naive"),
        )
    with pytest.raises(UsageError, match="name"):
        Rival(2.0, "")


def test_estimates_for_quantities_without_replicates(claims):
    rec = claims.agrees(
        "e", "a crossing", predicted=2.0, measured=Estimate(2.01, 0.01, 63, "jackknife")
    )
    assert rec.stat_band == pytest.approx(t_quantile(ALPHA / FAMILY, 63) * 0.01)
    assert rec.stat_method == "jackknife"
    with pytest.raises(UsageError, match="one prediction"):
        claims.agrees("e2", "x", predicted=[1.0, 2.0], measured=Estimate(1.0, 0.1))


def test_breaks_passes_only_when_the_prediction_misses(claims):
    claims.breaks(
        "b1",
        "fails here",
        predicted=-1.0,
        measured=normal(20, -0.3, 0.01),
        systematic=Tol(0.05, "o"),
    )
    with pytest.raises(ClaimFailed, match="expected to break"):
        claims.breaks("b2", "fails here", predicted=-1.0, measured=-0.99, systematic=Tol(0.05, "o"))


def test_bad_input_is_a_usage_error(claims):
    with pytest.raises(UsageError, match="must be a Tol"):
        claims.agrees("c", "x", predicted=1.0, measured=1.0, systematic=0.1)
    with pytest.raises(UsageError, match="Rival"):
        claims.agrees("c", "x", predicted=1.0, measured=1.0, rival=2.0)
    with pytest.raises(UsageError, match="numbers"):
        claims.agrees("c", "x", predicted="one", measured=1.0)
    with pytest.raises(UsageError, match="one per replicate"):
        claims.agrees("c", "x", predicted=[1.0, 2.0], measured=[1.0, 2.0, 3.0])
    with pytest.raises(UsageError, match="statement is empty"):
        claims.agrees("c", " ", predicted=1.0, measured=1.0)
    claims.agrees("c", "x", predicted=1.0, measured=1.0)
    with pytest.raises(UsageError, match="used twice"):
        claims.agrees("c", "x", predicted=1.0, measured=1.0)
    with pytest.raises(UsageError, match="claim id"):
        claims.agrees("bad id/", "x", predicted=1.0, measured=1.0)


def test_tensors_and_arrays_are_accepted(claims):
    rec = claims.agrees("t", "x", predicted=torch.tensor(1.0), measured=np.array([1.0, 1.0, 1.0]))
    assert isinstance(rec.measured, float) and rec.stat_band == 0.0


def test_prediction_scale_is_applied_and_recorded(claims, monkeypatch):
    monkeypatch.setenv("LMBOOK_PREDICTION_SCALE", "1.2")
    with pytest.raises(ClaimFailed, match="predicted 1.2"):
        claims.agrees("c", "x", predicted=1.0, measured=1.0, systematic=Tol(0.1, "o"))
    assert claims.records[-1].prediction_scale == 1.2
    monkeypatch.setenv("LMBOOK_PREDICTION_SCALE", "big")
    with pytest.raises(UsageError, match="LMBOOK_PREDICTION_SCALE"):
        claims.agrees("d", "x", predicted=1.0, measured=1.0)


def test_memory_only_when_no_results_dir():
    c = Claims("unit", "ci", "cpu", 0, "")
    c.agrees("c", "x", predicted=1.0, measured=1.0)
    c.agrees("c", "x", predicted=1.0, measured=1.0)  # a cell run again
    assert len(c.records) == 1
