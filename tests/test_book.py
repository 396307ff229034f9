"""`lmbook build --profile ci` renders the site from the executed chapters with warnings as errors,
and a prose-only edit re-renders without executing any chapter."""

import json

import pytest
from conftest import ROOT

from lmbook.engine.chapters import discover
from lmbook.engine.runner import cache_key, default_out, run_chapters

pytestmark = pytest.mark.slow


def test_the_book_builds_and_shows_the_claims(built_site):
    assert built_site.returncode == 0, built_site.stdout[-4000:] + built_site.stderr[-4000:]
    html = ROOT / "_build" / "html"
    # Sphinx's smartquotes print a title's ' as ’: compare titles with the plain apostrophe
    ledger = (html / "book" / "claims.html").read_text().replace("\u2019", "'")
    status = (html / "book" / "status.html").read_text()
    for c in discover(ROOT):
        page = (html / "notebooks" / f"{c.path.stem}.html").read_text()
        assert "lmbook-claims" in page, f"{c.id}: no claims table"
        assert "<img" in page, f"{c.id}: no figure"
        assert "Derivation" in page and "Where the theory breaks" in page
        assert "verified at full scale" in page.lower()
        assert f"{c.path.stem}.md" in page and f"{c.path.stem}.ipynb" in page, "download links"
        assert "Traceback" not in page
        assert c.title in ledger and c.id in status
    assert "claims passed" in ledger and "half_time_s4" in ledger
    assert "Pull plot of every claim" in ledger and ".svg" in ledger, "the ledger's pull plot"
    records = json.loads((html / "claims.json").read_text())
    assert {r["chapter"] for r in records} == {c.id for c in discover(ROOT)}, "claims.json"
    directions = (html / "book" / "open-directions.html").read_text().replace("\u2019", "'")
    assert all(c.title.split(":")[0] in directions for c in discover(ROOT))
    assert "torch" in status and "jupyter-book" in status and "total" in status


def test_a_prose_edit_does_not_re_execute(fixture_root, tmp_path):
    from lmbook.engine.site import merged_notebook

    [chapter] = discover(fixture_root)
    key = cache_key(chapter, {"p": 1}, ["stats.py"])
    out = tmp_path / "run"
    assert run_chapters([chapter], "ci", "cpu", 0, out)[0].status == "passed"
    chapter.path.write_text(
        chapter.path.read_text().replace(
            "is 1/2 with standard error", "equals one half, with standard error"
        )
    )
    assert cache_key(chapter, {"p": 1}, ["stats.py"]) == key
    assert run_chapters([chapter], "ci", "cpu", 0, out)[0].status == "cached"
    merged = json.loads(merged_notebook(chapter, out / "notebooks" / "tiny.ipynb", "tail"))
    text = "".join("".join(c["source"]) for c in merged["cells"])
    assert "equals one half" in text and "is 1/2 with" not in text
    assert any(c["cell_type"] == "code" and c.get("outputs") for c in merged["cells"]), (
        "outputs were kept"
    )
    chapter.path.write_text(chapter.path.read_text().replace("torch.rand(4096", "torch.rand(4097"))
    assert cache_key(chapter, {"p": 1}, ["stats.py"]) != key


def test_the_default_run_folder_is_per_profile():
    assert default_out(ROOT, "ci").name == "ci" and default_out(ROOT, "full").name == "full"
