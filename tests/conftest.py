"""Shared fixtures: the project root, a fixture project with one tiny chapter, and one ci run of the
real chapters shared by the chapter tests and the book-build test."""

import os

# Chapters are small float64 computations: one thread each is faster (and far faster on a busy
# machine), and the chapters then run side by side, one per core. Set before torch is imported;
# the chapters' kernels inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from lmbook.engine.chapters import discover  # noqa: E402
from lmbook.engine.runner import default_out, run_chapters  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
JOBS = max(1, min(4, os.cpu_count() or 1))  # chapters run at once in the chapter tests


@pytest.fixture
def fixture_root(tmp_path):
    """A throwaway project folder holding the tiny fixture chapter."""
    shutil.copytree(FIXTURES / "notebooks", tmp_path / "notebooks")
    return tmp_path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny float64 ops: one torch thread is faster, and far faster on a busy machine (OpenMP
    barriers)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def ci_run():
    """Every chapter of the book run once at the ci profile into the default run folder (the same
    folder `lmbook build --profile ci` reads, so the build test does not execute them again)."""
    chapters = discover(ROOT)
    out = default_out(ROOT, "ci")
    results = run_chapters(chapters, "ci", "auto", 0, out, jobs=JOBS)
    return chapters, results, out


@pytest.fixture(scope="session")
def built_site(ci_run):
    """`lmbook build --profile ci` once per session (reusing the ci run); returns the finished
    process."""
    return subprocess.run(
        [sys.executable, "-m", "lmbook", "build", "--profile", "ci"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
