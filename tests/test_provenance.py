"""Full-scale records: written by a full-profile run, read back, shown as a panel."""

import json

import pytest

from lmbook.engine.chapters import discover
from lmbook.engine.provenance import load_verified, panel_markdown, write_verified
from lmbook.engine.runner import run_chapters


def test_write_load_and_panel(tmp_path):
    info = {
        "chapter": "x",
        "profile": "full",
        "device": "NVIDIA H200",
        "finished": "2026-11-29T06:00:00+00:00",
        "seed": 0,
        "wall_seconds": 42.0,
        "status": "passed",
    }
    records = [
        {
            "claim": "a",
            "statement": "s",
            "kind": "agrees",
            "predicted": 1.0,
            "measured": 1.0,
            "se": 0.1,
            "tolerance": 0.1,
            "tolerance_origin": "o",
            "rival": None,
            "rival_name": None,
            "passed": True,
            "versions": {"torch": "2.13.0", "lmbook": "0.1.0", "python": "3.11"},
        }
    ]
    path = write_verified(tmp_path, info, records)
    assert json.loads(path.read_text())["claims_passed"] == 1
    entry = load_verified(tmp_path)["x"]
    panel = panel_markdown(entry)
    assert (
        "Verified at full scale: 1/1" in panel and "NVIDIA H200" in panel and "2026-11-29" in panel
    )
    assert "torch 2.13.0" in panel
    assert "Not yet verified" in panel_markdown(None)


@pytest.mark.slow
def test_a_full_profile_run_writes_its_record(fixture_root, tmp_path):
    verified = tmp_path / "verified"
    [res] = run_chapters(
        discover(fixture_root), "full", "cpu", 0, tmp_path / "run", verified_dir=verified
    )
    assert res.status == "passed"
    entry = json.loads((verified / "tiny.json").read_text())
    assert entry["profile"] == "full" and entry["claims_total"] == 3 and len(entry["claims"]) == 3
    [ci] = run_chapters(
        discover(fixture_root), "ci", "cpu", 0, tmp_path / "run-ci", verified_dir=tmp_path / "v2"
    )
    assert ci.status == "passed" and not (tmp_path / "v2").exists(), (
        "only full-profile runs leave records"
    )
