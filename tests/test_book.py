"""`lmbook build --profile ci` renders the site from the executed chapters with warnings as errors."""
import subprocess
import sys

import pytest

from conftest import ROOT
from lmbook.chapters import discover

pytestmark = pytest.mark.slow


def test_the_book_builds_and_shows_the_claims(ci_run):
    done = subprocess.run([sys.executable, "-m", "lmbook", "build", "--profile", "ci"], cwd=ROOT,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    html = ROOT / "_build" / "html"
    ledger = (html / "book" / "claims.html").read_text()
    for c in discover(ROOT):
        page = (html / "notebooks" / f"{c.path.stem}.html").read_text()
        assert "lmbook-claims" in page, f"{c.id}: no claims table"
        assert "<img" in page, f"{c.id}: no figure"
        assert "Derivation" in page and "Where the theory breaks" in page
        assert "Traceback" not in page
        assert c.title in ledger
    assert "claims passed" in ledger and "half_time_s4" in ledger
