"""The runner on the tiny fixture chapter: execution, records, the cache keyed on imported modules,
failures, contract, jobs, the folder lock."""

import json
import shutil

import pytest

from lmbook.engine import runner
from lmbook.engine.chapters import discover, read_chapter, select
from lmbook.engine.runner import is_current, locked, run_chapters
from lmbook.errors import UsageError

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
    assert (
        "claim tiny/mean failed" in res.message
        and "predicted 0.6" in res.message
        and "missed by" in res.message
    )
    assert (
        json.loads((tmp_path / "run" / "claims" / "tiny" / "mean.json").read_text())["passed"]
        is False
    )


def test_a_cell_error_is_reported(fixture_root, tmp_path):
    nb = fixture_root / "notebooks" / "tiny.md"
    nb.write_text(nb.read_text().replace("sample = torch.rand(", "sample = undefined_name("))
    [res] = _run(fixture_root, tmp_path / "run")
    assert res.status == "error" and "NameError" in res.message


def test_the_chapter_contract_is_enforced(fixture_root, tmp_path):
    nb = fixture_root / "notebooks" / "tiny.md"
    text = nb.read_text()
    start = text.index('claims.breaks("not_normal"')
    nb.write_text(text[:start] + "```\n")
    [res] = _run(fixture_root, tmp_path / "run")
    assert res.status == "failed" and "at least 3" in res.message


def test_parallel_jobs(fixture_root, tmp_path):
    src = fixture_root / "notebooks" / "tiny.md"
    (fixture_root / "notebooks" / "tiny2.md").write_text(
        src.read_text().replace("id: tiny", "id: tiny2")
    )
    results = _run(fixture_root, tmp_path / "run", jobs=2)
    assert [r.id for r in results] == ["tiny", "tiny2"] and all(
        r.status == "passed" for r in results
    )
    record = json.loads((tmp_path / "run" / "claims" / "tiny2" / "mean.json").read_text())
    assert record["chapter"] == "tiny2", "the runner injects the id from the front matter"


def test_the_cache_is_keyed_on_the_modules_the_chapter_imported(
    fixture_root, tmp_path, monkeypatch
):
    out = tmp_path / "run"
    [res] = _run(fixture_root, out)
    assert res.status == "passed", res.message
    info = json.loads((out / "runs" / "tiny.json").read_text())
    assert "stats.py" in info["modules"] and "claims.py" in info["modules"]
    assert not any(m.startswith("engine") for m in info["modules"]), (
        "chapters never import the engine"
    )
    assert "deep_linear.py" not in info["modules"]
    not_in_notebook = json.loads((out / "notebooks" / "tiny.ipynb").read_text())
    assert "LMBOOK_MODULES" not in json.dumps(not_in_notebook), "the probe cell is removed"

    lib = tmp_path / "lib"  # a copy of the package whose files we may edit
    shutil.copytree(runner.LIB_DIR, lib, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(runner, "LIB_DIR", lib)
    [chapter] = discover(fixture_root)
    keyed = {"profile": "ci", "seed": 0, "device_type": "cpu"}
    assert is_current(chapter, out, keyed)
    (lib / "engine" / "ledger.py").write_text(
        (lib / "engine" / "ledger.py").read_text() + "\n# edited\n"
    )
    (lib / "deep_linear.py").write_text((lib / "deep_linear.py").read_text() + "\n# edited\n")
    assert is_current(chapter, out, keyed), (
        "a ledger edit or an unrelated science edit re-executes nothing"
    )
    (lib / "stats.py").write_text((lib / "stats.py").read_text() + "\n# edited\n")
    assert not is_current(chapter, out, keyed), (
        "an edit of an imported module re-executes the chapter"
    )


def test_a_second_run_into_a_locked_folder_is_refused(fixture_root, tmp_path):
    out = tmp_path / "run"
    with locked(out):
        with pytest.raises(UsageError, match="another lmbook run is writing into"):
            _run(fixture_root, out)


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
