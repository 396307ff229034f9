"""Every chapter of the book, run at the ci profile with its claims asserted; the table of contents;
and proof that the suite can fail."""

import re
import subprocess
import sys

import pytest
import yaml
from conftest import JOBS, ROOT

from lmbook.engine.chapters import PARTS, ROMAN, discover
from lmbook.engine.ledger import load_records
from lmbook.engine.runner import run_chapters

pytestmark = pytest.mark.slow


def test_every_chapter_passes_its_claims(ci_run):
    chapters, results, out = ci_run
    assert chapters, "the book has no chapters"
    failures = [f"{r.id} ({r.status}): {r.message}" for r in results if not r.ok]
    assert not failures, "\n\n".join(failures)
    records = load_records(out)
    for c in chapters:
        mine = [r for r in records if r["chapter"] == c.id]
        assert len(mine) >= 3, f"{c.id} records {len(mine)} claims"
        assert any(r["kind"] == "breaks" for r in mine), (
            f"{c.id} has no 'where the theory breaks' claim"
        )
        assert all(r["passed"] and r["profile"] == "ci" and r["tolerance_origin"] for r in mine)


def test_claims_hold_for_another_seed(tmp_path):
    """The claims must hold for any seed, not just the default one.

    Run every chapter with seed 1.
    """
    results = run_chapters(discover(ROOT), "ci", "auto", 1, tmp_path, jobs=JOBS)
    failures = [f"{r.id} ({r.status}): {r.message}" for r in results if not r.ok]
    assert not failures, "\n\n".join(failures)
    assert all(r["seed"] == 1 and r["passed"] for r in load_records(tmp_path))


@pytest.mark.parametrize("part", sorted(PARTS))
def test_toc_part_pages_and_readme_agree_with_the_front_matter(part):
    """The chapters' front matter is the one source: _toc.yml, the part pages and the README table
    must list exactly the chapters of each part, in file order."""
    chapters = [c for c in discover(ROOT) if c.part == part]
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    entry = toc["parts"][part - 1]
    assert entry["caption"] == f"Part {ROMAN[part]}: {PARTS[part]}"
    files = [ch["file"] for ch in entry["chapters"]]
    assert files == [f"book/parts/part{part}"] + [f"notebooks/{c.path.stem}" for c in chapters]
    page = (ROOT / "book" / "parts" / f"part{part}.md").read_text()
    listed = re.findall(r"\{doc\}`\.\./\.\./notebooks/([^`]+)`", page)
    assert listed == [c.path.stem for c in chapters], f"book/parts/part{part}.md lists {listed}"
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(rf"^\| {ROMAN[part]} \| .*\(`([a-z0-9-]+)`\) \|", readme, re.M)
    assert rows == [c.id for c in chapters], (
        f"README's chapter table lists {rows} in part {ROMAN[part]}"
    )


def test_a_wrong_prediction_makes_the_run_fail(tmp_path, monkeypatch):
    """Move every prediction of chapter 1 by 20%: the run must fail, saying what was predicted,
    what was measured and by how much it missed."""
    monkeypatch.setenv("LMBOOK_PREDICTION_SCALE", "1.2")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lmbook",
            "run",
            "deep-linear",
            "--profile",
            "ci",
            "--no-record",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED deep-linear" in done.stdout
    assert (
        "claim deep-linear/" in done.stdout
        and "predicted" in done.stdout
        and "missed by" in done.stdout
    )
    failed = [r for r in load_records(tmp_path) if not r["passed"]]
    assert failed and all(r["prediction_scale"] == 1.2 for r in failed)


def test_every_chapter_touches_an_open_direction_and_links_the_page():
    """The open-directions page is generated from the front matter; each chapter's "Open questions"
    section links back to it."""
    for c in discover(ROOT):
        assert c.open_directions, f"{c.id}: list open_directions in the front matter"
        text = c.path.read_text()
        section = text[text.index("## Open questions") : text.index("## References")]
        assert "../book/open-directions" in section, f"{c.id}: Open questions must link the page"
