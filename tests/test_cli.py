"""The command line: listings, the ledger, and exit code 2 with the valid choices for bad input."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import ROOT


def lmbook(*args, root=None):
    cmd = [sys.executable, "-m", "lmbook"] + (["--root", str(root)] if root else []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_list_json():
    done = lmbook("list", "--format", "json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert rows and all(set(r) == {"id", "part", "title", "path"} for r in rows)
    assert "deep-linear" in {r["id"] for r in rows}
    assert lmbook("list").returncode == 0


def test_unknown_chapter_exits_2_listing_the_valid_ones():
    done = lmbook("run", "no-such-chapter")
    assert done.returncode == 2 and "unknown chapter" in done.stderr and "deep-linear" in done.stderr


def test_unknown_profile_and_device_exit_2():
    done = lmbook("run", "--profile", "huge")
    assert done.returncode == 2 and "'ci', 'full'" in done.stderr
    done = lmbook("run", "--device", "tpu")
    assert done.returncode == 2 and "'auto', 'cpu', 'cuda'" in done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_cuda_absent_exits_2():
    done = lmbook("run", "deep-linear", "--device", "cuda")
    assert done.returncode == 2 and "CUDA is not available" in done.stderr and "--device cpu" in done.stderr


def test_claims_of_a_missing_folder_exits_2(tmp_path):
    done = lmbook("claims", str(tmp_path / "nothing"))
    assert done.returncode == 2 and "lmbook run --out" in done.stderr


def test_a_root_without_chapters_exits_2(tmp_path):
    done = lmbook("list", root=tmp_path)
    assert done.returncode == 2 and "no notebooks/ folder" in done.stderr and "--root" in done.stderr


def test_jobs_must_be_positive():
    done = lmbook("run", "deep-linear", "--jobs", "0")
    assert done.returncode == 2 and "--jobs" in done.stderr


@pytest.mark.slow
def test_run_and_claims_on_the_fixture(fixture_root, tmp_path):
    out = tmp_path / "run"
    done = lmbook("run", "--out", str(out), "--device", "cpu", "--profile", "ci", root=fixture_root)
    assert done.returncode == 0, done.stderr
    assert "tiny" in done.stdout and "3/3" in done.stdout
    done = lmbook("claims", str(out), "--format", "json")
    records = json.loads(done.stdout)
    assert done.returncode == 0 and len(records) == 3
    for key in ("chapter", "claim", "statement", "predicted", "measured", "tolerance", "tolerance_origin",
                "rival", "passed", "profile", "device", "seed"):
        assert all(key in r for r in records)
    table = lmbook("claims", str(out))
    assert "3/3 claims passed" in table.stdout


@pytest.mark.slow
def test_a_failing_claim_exits_1_naming_the_chapter(fixture_root, tmp_path):
    nb = fixture_root / "notebooks" / "tiny.md"
    nb.write_text(nb.read_text().replace("predicted=mean,", "predicted=1.2 * mean,"))
    done = lmbook("run", "--out", str(tmp_path / "run"), root=fixture_root)
    assert done.returncode == 1
    assert "FAILED tiny" in done.stdout and "claim tiny/mean failed" in done.stdout
