import json
import math

import pytest

from lmbook import ClaimFailed, Claims, UsageError
from lmbook.claims import evaluate


@pytest.fixture
def claims(tmp_path):
    return Claims("unit", "ci", "cpu", 0, tmp_path / "claims")


def record_file(tmp_path, claim):
    return json.loads((tmp_path / "claims" / f"{claim}.json").read_text())


def test_pass_writes_a_complete_record(claims, tmp_path):
    rec = claims.check("c", "x is 1", predicted=1.0, measured=1.01, tolerance=0.02, tolerance_origin="seed spread")
    assert rec.passed
    data = record_file(tmp_path, "c")
    for key in ("chapter", "claim", "statement", "predicted", "measured", "se", "tolerance", "tolerance_origin",
                "rival", "rival_name", "passed", "profile", "device", "seed", "versions", "wall_seconds"):
        assert key in data
    assert data["passed"] is True and data["versions"]["torch"]
    assert not list((tmp_path / "claims").glob("*.tmp")), "no temporary file may be left behind"


def test_fail_raises_with_numbers_and_still_writes(claims, tmp_path):
    with pytest.raises(ClaimFailed) as err:
        claims.check("c", "x is 1", predicted=1.0, measured=1.5, tolerance=0.1, tolerance_origin="seed spread")
    msg = str(err.value)
    assert "predicted 1" in msg and "measured 1.5" in msg and "missed by 0.5" in msg and "50.0%" in msg
    assert record_file(tmp_path, "c")["passed"] is False


def test_standard_error_widens_the_window(claims):
    claims.check("c", "x is 1", predicted=1.0, measured=1.15, se=0.05, tolerance=0.1, tolerance_origin="o")
    with pytest.raises(ClaimFailed):
        claims.check("d", "x is 1", predicted=1.0, measured=1.25, se=0.05, tolerance=0.1, tolerance_origin="o")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_inf_never_pass(claims, tmp_path, bad):
    with pytest.raises(ClaimFailed, match="NaN or infinite"):
        claims.check("m", "x", predicted=1.0, measured=bad, tolerance=1e9, tolerance_origin="o")
    with pytest.raises(ClaimFailed):
        claims.check("p", "x", predicted=bad, measured=1.0, tolerance=1e9, tolerance_origin="o")
    with pytest.raises(ClaimFailed):
        claims.check("s", "x", predicted=1.0, measured=1.0, se=bad, tolerance=1.0, tolerance_origin="o")
    with pytest.raises(ClaimFailed):
        claims.breaks("b", "x", predicted=1.0, measured=bad, tolerance=0.1, tolerance_origin="o")
    assert record_file(tmp_path, "m")["passed"] is False


def test_rival_inside_the_tolerance_fails(claims):
    with pytest.raises(ClaimFailed, match="rival 'naive'.*cannot tell the theories apart"):
        claims.check("r", "x is 1", predicted=1.0, measured=1.0, tolerance=0.5, tolerance_origin="o",
                     rival=1.2, rival_name="naive")
    claims.check("r2", "x is 1", predicted=1.0, measured=1.0, tolerance=0.1, tolerance_origin="o",
                 rival=1.5, rival_name="naive")


@pytest.mark.parametrize("origin", [None, "", "   "])
def test_tolerance_origin_is_required(claims, origin):
    with pytest.raises(UsageError, match="tolerance_origin is required"):
        claims.check("c", "x", predicted=1.0, measured=1.0, tolerance=0.1, tolerance_origin=origin)


def test_bad_input_is_a_usage_error(claims):
    with pytest.raises(UsageError, match="non-negative"):
        claims.check("c", "x", predicted=1.0, measured=1.0, tolerance=-1, tolerance_origin="o")
    with pytest.raises(UsageError, match="rival_name"):
        claims.check("c", "x", predicted=1.0, measured=1.0, tolerance=1, tolerance_origin="o", rival=2.0)
    with pytest.raises(UsageError, match="must be a number"):
        claims.check("c", "x", predicted="one", measured=1.0, tolerance=1, tolerance_origin="o")
    with pytest.raises(UsageError, match="non-negative standard error"):
        claims.check("c", "x", predicted=1.0, measured=1.0, se=-0.1, tolerance=1, tolerance_origin="o")
    claims.check("c", "x", predicted=1.0, measured=1.0, tolerance=1, tolerance_origin="o")
    with pytest.raises(UsageError, match="used twice"):
        claims.check("c", "x", predicted=1.0, measured=1.0, tolerance=1, tolerance_origin="o")
    with pytest.raises(UsageError, match="claim id"):
        claims.check("bad id/", "x", predicted=1.0, measured=1.0, tolerance=1, tolerance_origin="o")


def test_breaks_passes_only_when_the_prediction_misses(claims):
    claims.breaks("b1", "fails here", predicted=-1.0, measured=-0.3, se=0.01, tolerance=0.05, tolerance_origin="o")
    with pytest.raises(ClaimFailed, match="expected to break"):
        claims.breaks("b2", "fails here", predicted=-1.0, measured=-0.99, tolerance=0.05, tolerance_origin="o")


def test_tensors_are_accepted(claims):
    torch = pytest.importorskip("torch")
    rec = claims.check("t", "x", predicted=torch.tensor(1.0), measured=torch.tensor(1.0, dtype=torch.float64),
                       se=torch.tensor(0.0), tolerance=torch.tensor(0.1), tolerance_origin="o")
    assert isinstance(rec.measured, float)


def test_prediction_scale_is_applied_and_recorded(claims, monkeypatch):
    monkeypatch.setenv("LMBOOK_PREDICTION_SCALE", "1.2")
    with pytest.raises(ClaimFailed, match="predicted 1.2"):
        claims.check("c", "x", predicted=1.0, measured=1.0, tolerance=0.1, tolerance_origin="o")
    assert claims.records[-1].prediction_scale == 1.2


def test_bad_prediction_scale_is_a_usage_error(claims, monkeypatch):
    monkeypatch.setenv("LMBOOK_PREDICTION_SCALE", "big")
    with pytest.raises(UsageError, match="LMBOOK_PREDICTION_SCALE"):
        claims.check("c", "x", predicted=1.0, measured=1.0, tolerance=0.1, tolerance_origin="o")


def test_memory_only_when_no_results_dir():
    c = Claims("unit", "ci", "cpu", 0, "")
    c.check("c", "x", predicted=1.0, measured=1.0, tolerance=0.1, tolerance_origin="o")
    c.check("c", "x", predicted=1.0, measured=1.0, tolerance=0.1, tolerance_origin="o")   # a cell run again
    assert len(c.records) == 1 and "c" in repr(c.table()) and "<table" in c.table()._repr_html_()


def test_evaluate_rules():
    assert evaluate("agrees", 1.0, 1.05, 0.1) [0]
    assert not evaluate("agrees", 1.0, 1.2, 0.1)[0]
    assert evaluate("breaks", 1.0, 1.2, 0.1)[0]
    assert not evaluate("agrees", 1.0, 1.0, 0.1, rival=math.nan)[0]
