"""The runner on the tiny fixture chapter: execution, records, caching, failures, contract, jobs."""
import json
import shutil

import pytest

from lmbook.engine.chapters import discover, read_chapter, select
from lmbook.errors import UsageError
from lmbook.engine.runner import run_chapters

pytestmark = pytest.mark.slow


def _run(root, out, **kw):
    return run_chapters(discover(root), "ci", "cpu", kw.pop("seed", 0), out, **kw)


def test_runs_the_fixture_and_caches_it(fixture_root, tmp_path):
    out = tmp_path / "run"
    [res] = _run(fixture_root, out)
    assert res.status == "passed" and (res.claims_passed, res.claims_total) == (3, 3), res.message
    assert (out / "notebooks" / "tiny.ipynb").exists()
    records = [json.loads(p.read_text()) for p in (out / "claims" / "tiny").glob("*.json")]
    assert {r["claim"] for r in records} == {"mean", "second_moment", "not_normal"}
    assert all(r["profile"] == "ci" and r["seed"] == 0 for r in records)
    assert json.loads((out / "runs" / "tiny.json").read_text())["status"] == "passed"
    assert not list(out.rglob(".*partial*")), "no half-written notebook may be left behind"

    [again] = _run(fixture_root, out)
    assert again.status == "cached"
    [other_seed] = _run(fixture_root, out, seed=1)
    assert other_seed.status == "passed"
    [forced] = _run(fixture_root, out, seed=1, force=True)
    assert forced.status == "passed"


def test_a_wrong_prediction_fails_with_the_message(fixture_root, tmp_path):
    nb = fixture_root / "notebooks" / "tiny.md"
    nb.write_text(nb.read_text().replace("predicted=mean,", "predicted=1.2 * mean,"))
    [res] = _run(fixture_root, tmp_path / "run")
    assert res.status == "failed"
    assert "claim tiny/mean failed" in res.message and "predicted 0.6" in res.message and "missed by" in res.message
    assert json.loads((tmp_path / "run" / "claims" / "tiny" / "mean.json").read_text())["passed"] is False


def test_a_cell_error_is_reported(fixture_root, tmp_path):
    nb = fixture_root / "notebooks" / "tiny.md"
    nb.write_text(nb.read_text().replace("n = 4096", "n = undefined_name"))
    [res] = _run(fixture_root, tmp_path / "run")
    assert res.status == "error" and "NameError" in res.message


def test_the_chapter_contract_is_enforced(fixture_root, tmp_path):
    nb = fixture_root / "notebooks" / "tiny.md"
    text = nb.read_text()
    start = text.index('claims.breaks("not_normal"')
    nb.write_text(text[:start] + text[text.index("claims.table()"):])
    [res] = _run(fixture_root, tmp_path / "run")
    assert res.status == "failed" and "at least 3" in res.message


def test_parallel_jobs(fixture_root, tmp_path):
    src = fixture_root / "notebooks" / "tiny.md"
    (fixture_root / "notebooks" / "tiny2.md").write_text(src.read_text().replace("id: tiny", "id: tiny2")
                                                        .replace('Claims("tiny"', 'Claims("tiny2"'))
    results = _run(fixture_root, tmp_path / "run", jobs=2)
    assert [r.id for r in results] == ["tiny", "tiny2"] and all(r.status == "passed" for r in results)


def test_selection_and_metadata_errors(fixture_root, tmp_path):
    chapters = discover(fixture_root)
    assert select(chapters, ["tiny"]) == chapters == select(chapters, [])
    with pytest.raises(UsageError, match="valid chapters: tiny"):
        select(chapters, ["nope"])
    bad = tmp_path / "bad.md"
    bad.write_text("---\nlmbook: {id: x, part: 9}\n---\n# T\n")
    with pytest.raises(UsageError, match="part must be one of"):
        read_chapter(bad)
    with pytest.raises(UsageError, match="--jobs must be at least 1"):
        run_chapters(chapters, "ci", "cpu", 0, tmp_path / "run", jobs=0)
