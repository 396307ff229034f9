"""The record across runs: `lmbook claims diff` (claim drift), `lmbook build --runs` (run folders
made apart, e.g. one per GPU job, merged and built without executing anything), and `--jobs N`
giving each worker its own GPU."""

import json
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import FIXTURES, ROOT

from lmbook.engine.chapters import discover
from lmbook.engine.diff import compare, load_ledger, verdict
from lmbook.engine.merge import merge_runs
from lmbook.engine.runner import run_chapters
from lmbook.errors import UsageError


def lmbook(*args, root=None):
    cmd = [sys.executable, "-m", "lmbook"] + (["--root", str(root)] if root else []) + list(args)
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A fixture project with two chapters (tiny, and a copy `tiny2`), each run at seeds 0 and 1
    into its own folder, as two GPU jobs would."""
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(FIXTURES / "notebooks", root / "notebooks")
    tiny = (root / "notebooks" / "tiny.md").read_text()
    (root / "notebooks" / "tiny2.md").write_text(
        tiny.replace("id: tiny", "id: tiny2").replace("# A tiny", "# A second tiny")
    )
    one, two = discover(root)
    runs = {}
    for seed in (0, 1):
        for c in (one, two):
            out = root / "runs" / f"{c.id}-s{seed}"
            assert run_chapters([c], "ci", "cpu", seed, out)[0].status == "passed"
            runs[c.id, seed] = out
    return root, runs


@pytest.mark.slow
def test_diff_of_two_seeds_reports_drift_in_combined_ses(project):
    root, runs = project
    rows = compare(load_ledger(runs["tiny", 0]), load_ledger(runs["tiny", 1]))
    assert [r["claim"] for r in rows] == ["mean", "second_moment", "not_normal"]
    for r in rows:
        assert r["change"] == "" and "prediction_moved" not in r
        assert r["drift_unit"] == "SE" and abs(r["drift"]) < 6  # two seeds of one law
    assert verdict(rows) == (0, [])
    done = lmbook("claims", "diff", str(runs["tiny", 0]), str(runs["tiny", 1]))
    assert done.returncode == 0, done.stderr
    assert "tiny/mean" in done.stdout and "no new failure" in done.stdout
    # a drift limit below the seed-to-seed drift is exceeded
    smallest = min(abs(r["drift"]) for r in rows if r["drift"] != 0)
    done = lmbook(
        "claims", "diff", str(runs["tiny", 0]), str(runs["tiny", 1]), "--max-drift",
        str(smallest / 2),
    )  # fmt: skip
    assert done.returncode == 1 and "drifted" in done.stdout


@pytest.mark.slow
def test_a_moved_prediction_is_a_changed_theory_not_drift(project, tmp_path):
    root, runs = project
    old = load_ledger(runs["tiny", 0])
    new = json.loads(json.dumps(old))
    for r in new:
        if r["claim"] == "mean":
            r["predicted"] = 0.6
            r["passed"] = False
        if r["claim"] == "second_moment":
            r["systematic_terms"] = [{"value": 0.01, "origin": "a new budget term"}]
    ledger = tmp_path / "claims.json"
    ledger.write_text(json.dumps(new))
    rows = {r["claim"]: r for r in compare(old, load_ledger(ledger))}
    assert rows["mean"]["prediction_moved"] == [pytest.approx(0.5), 0.6]
    assert rows["mean"]["change"] == "pass -> fail" and rows["mean"]["drift"] == 0
    assert rows["second_moment"].get("budget_changed") and rows["not_normal"]["change"] == ""
    done = lmbook("claims", "diff", str(runs["tiny", 0]), str(ledger), "--format", "json")
    report = json.loads(done.stdout)
    assert done.returncode == 1 and report["exit"] == 1
    assert any("tiny/mean" in reason for reason in report["reasons"])
    table = lmbook("claims", "diff", str(runs["tiny", 0]), str(ledger))
    assert "prediction moved 0.5 -> 0.6" in table.stdout and "budget changed" in table.stdout


@pytest.mark.slow
def test_new_and_removed_claims(project):
    root, runs = project
    both = load_ledger(runs["tiny", 0]) + load_ledger(runs["tiny2", 0])
    rows = compare(load_ledger(runs["tiny", 0]), both)
    assert sum(r["change"] == "new" for r in rows) == 3
    rows = compare(both, load_ledger(runs["tiny", 0]))
    assert sum(r["change"] == "removed" for r in rows) == 3 and verdict(rows)[0] == 0


@pytest.mark.slow
def test_diff_bad_input_exits_2(project, tmp_path):
    root, runs = project
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    for args in (
        ("diff", str(runs["tiny", 0])),
        ("diff", str(runs["tiny", 0]), str(tmp_path / "missing")),
        ("diff", str(runs["tiny", 0]), str(bad)),
        ("diff", str(runs["tiny", 0]), str(runs["tiny", 1]), "--max-drift", "-1"),
        (str(runs["tiny", 0]), "--max-drift", "3"),
    ):
        done = lmbook("claims", *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "error" in done.stderr


@pytest.mark.slow
def test_merge_takes_each_chapter_from_its_job(project, tmp_path):
    root, runs = project
    chapters = discover(root)
    out = merge_runs([runs["tiny", 0], runs["tiny2", 1]], tmp_path / "merged", chapters)
    assert sorted(p.name for p in (out / "notebooks").glob("*.ipynb")) == [
        "tiny.ipynb",
        "tiny2.ipynb",
    ]
    assert len(load_ledger(out)) == 6
    assert {r["seed"] for r in load_ledger(out)} == {0, 1}
    with pytest.raises(UsageError, match="both"):
        merge_runs([runs["tiny", 0], runs["tiny", 1]], tmp_path / "m2", chapters)
    with pytest.raises(UsageError, match="not a run folder"):
        merge_runs([root / "notebooks"], tmp_path / "m3", chapters)


@pytest.mark.slow
def test_build_from_merged_run_folders_executes_nothing(project, tmp_path):
    root, runs = project
    site = tmp_path / "site"
    shutil.copytree(root / "notebooks", site / "notebooks")
    shutil.copy(ROOT / "_config.yml", site / "_config.yml")
    (site / "book").mkdir()
    shutil.copy(ROOT / "book" / "references.bib", site / "book")
    pages = [p for p in sorted((ROOT / "book").glob("*.md")) if p.name != "intro.md"]
    for page in pages:  # the record's pages, which chapter pages link to
        shutil.copy(page, site / "book")
    (site / "book" / "intro.md").write_text("# Fixture book\n\nTwo tiny chapters.\n")
    (site / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nchapters:\n"
        + "".join(f"  - file: {f}\n" for f in ["notebooks/tiny", "notebooks/tiny2"])
        + "".join(f"  - file: book/{p.stem}\n" for p in pages)
    )
    done = lmbook(
        "build", "--runs", str(runs["tiny", 0]), str(runs["tiny2", 0]), root=site
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "0 chapters executed" in done.stdout
    html = site / "_build" / "html"
    assert "second tiny" in (html / "notebooks" / "tiny2.html").read_text()
    assert len(json.loads((html / "claims.json").read_text())) == 6
    assert not (site / "_build" / "runs" / "ci").exists(), "nothing was executed"
    # the pull plots: on the ledger page and on each chapter page, as figures with captions
    assert "pulls/all.svg" in (site / "_build" / "site-src" / "book" / "claims.md").read_text()
    assert list((html / "_images").glob("*.svg")), "the pull plots were rendered"
    assert "Pull plot of this chapter" in (html / "notebooks" / "tiny.html").read_text()
    # Colab: the staged notebook installs lmbook where it is missing; the website hides the cell
    staged = json.loads((site / "_build" / "site-src" / "notebooks" / "tiny.ipynb").read_text())
    first = staged["cells"][0]
    assert "remove-cell" in first["metadata"]["tags"] and "%pip install" in "".join(first["source"])
    assert "pip install" not in (html / "notebooks" / "tiny.html").read_text()
    done = lmbook("build", "--runs", str(runs["tiny", 0]), str(runs["tiny", 1]), root=site)
    assert done.returncode == 2 and "both" in done.stderr


def test_each_worker_gets_its_own_gpu(monkeypatch):
    import torch

    from lmbook.engine import runner

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert runner.worker_devices("auto", 4) == ["cuda:0", "cuda:1", "cuda:2", "cuda:0"]
    assert runner.worker_devices("cpu", 2) == ["cpu", "cpu"]
    seen = []

    def fake_run(c, profile, device, *rest):
        seen.append(device)
        return runner.ChapterResult(c, c, "passed", 3, 3, 0.0)

    monkeypatch.setattr(runner, "run_chapter", fake_run)
    results = runner._run_all(["a", "b", "c"], "full", "cuda", 0, None, 3, False, None)
    assert [r.id for r in results] == ["a", "b", "c"]
    assert sorted(seen) == ["cuda:0", "cuda:1", "cuda:2"]


@pytest.mark.slow
def test_new_scaffolds_a_chapter_whose_placeholder_fails(fixture_root, tmp_path):
    shutil.copy(ROOT / "_toc.yml", fixture_root / "_toc.yml")
    (fixture_root / "book" / "parts").mkdir(parents=True)
    shutil.copy(ROOT / "book" / "parts" / "part2.md", fixture_root / "book" / "parts")
    shutil.copy(ROOT / "README.md", fixture_root / "README.md")
    done = lmbook("new", "edge-of-chaos", "--part", "2", "--title", "The edge", root=fixture_root)
    assert done.returncode == 0, done.stderr
    [path] = (fixture_root / "notebooks").glob("02*_edge_of_chaos.md")
    chapter = {c.id: c for c in discover(fixture_root)}["edge-of-chaos"]
    assert chapter.part == 2 and chapter.title == "The edge" and chapter.path == path
    toc = yaml.safe_load((fixture_root / "_toc.yml").read_text())
    assert f"notebooks/{path.stem}" == toc["parts"][1]["chapters"][-1]["file"]
    assert f"notebooks/{path.stem}`" in (fixture_root / "book" / "parts" / "part2.md").read_text()
    assert "(`edge-of-chaos`)" in (fixture_root / "README.md").read_text()
    text = path.read_text()
    for section in ("## The setting", "## Derivation", "## Claims", "## Where the theory breaks"):
        assert section in text
    done = lmbook("run", "edge-of-chaos", "--out", str(tmp_path / "run"), root=fixture_root)
    assert done.returncode == 1 and "placeholder" in done.stdout, done.stdout + done.stderr
    for args in (
        ("Bad Id", "--part", "2", "--title", "x"),
        ("ok-id", "--part", "7", "--title", "x"),
        ("tiny", "--part", "1", "--title", "x"),
        ("ok-id", "--part", "2", "--title", " "),
    ):
        done = lmbook("new", *args, root=fixture_root)
        assert done.returncode == 2 and "error" in done.stderr, args
