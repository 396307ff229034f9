"""The command line: listings, the ledger, and exit code 2 with the valid choices for bad input."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch


def lmbook(*args, root=None):
    cmd = [sys.executable, "-m", "lmbook"] + (["--root", str(root)] if root else []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_list_json():
    done = lmbook("list", "--format", "json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert rows and all(set(r) == {"id", "part", "title", "path", "open_directions"} for r in rows)
    assert "deep-linear" in {r["id"] for r in rows}
    assert lmbook("list").returncode == 0


def test_unknown_chapter_exits_2_listing_the_valid_ones():
    done = lmbook("run", "no-such-chapter")
    assert (
        done.returncode == 2 and "unknown chapter" in done.stderr and "deep-linear" in done.stderr
    )


def test_unknown_profile_and_device_exit_2():
    done = lmbook("run", "--profile", "huge")
    assert done.returncode == 2 and "'ci', 'full'" in done.stderr
    done = lmbook("run", "--device", "tpu")
    assert done.returncode == 2 and "'auto', 'cpu', 'cuda'" in done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_cuda_absent_exits_2():
    done = lmbook("run", "deep-linear", "--device", "cuda")
    assert (
        done.returncode == 2
        and "CUDA is not available" in done.stderr
        and "--device cpu" in done.stderr
    )


def test_claims_of_a_missing_folder_exits_2(tmp_path):
    done = lmbook("claims", str(tmp_path / "nothing"))
    assert done.returncode == 2 and "lmbook run --out" in done.stderr


def test_a_root_without_chapters_exits_2(tmp_path):
    done = lmbook("list", root=tmp_path)
    assert (
        done.returncode == 2 and "no notebooks/ folder" in done.stderr and "--root" in done.stderr
    )


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
    for key in (
        "chapter",
        "claim",
        "statement",
        "predicted",
        "measured",
        "tolerance",
        "tolerance_origin",
        "stat_band",
        "allowed",
        "rival",
        "discrimination",
        "passed",
        "profile",
        "device",
        "seed",
    ):
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


def test_an_unwritable_out_folder_exits_2_naming_it():
    done = lmbook("run", "deep-linear", "--out", "/proc/forbidden")
    assert (
        done.returncode == 2 and "/proc/forbidden" in done.stderr and "Traceback" not in done.stderr
    )


def test_bad_seeds_exit_2():
    done = lmbook("sweep", "deep-linear", "--seeds", "9-3")
    assert done.returncode == 2 and "write the smaller seed first" in done.stderr


@pytest.mark.slow
def test_ctrl_c_exits_130_and_leaves_nothing_that_looks_passed(fixture_root, tmp_path):
    nb = fixture_root / "notebooks" / "tiny.md"
    nb.write_text(
        nb.read_text().replace(
            'claims.agrees("second_moment"',
            'import time; time.sleep(60)\nclaims.agrees("second_moment"',
        )
    )
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmbook", "--root", str(fixture_root), "run", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = out / "claims" / "tiny" / "mean.json"
    deadline = time.time() + 120
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert first.exists(), "the first claim should have been recorded before the interrupt"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted" in err and "Traceback" not in err and "KeyboardInterrupt" not in err
    done = lmbook("claims", str(out))
    assert done.returncode != 0 and "passed" not in done.stdout.replace("0/0", "")


@pytest.mark.slow
def test_sweep_reports_calibration(fixture_root, tmp_path):
    done = lmbook("sweep", "--seeds", "0-2", "--out", str(tmp_path / "sw"), root=fixture_root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tiny/mean" in done.stdout and "calibrated: yes" in done.stdout
    report = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert report["seeds"] == [0, 1, 2] and report["chapters"]["tiny"]["seeds_passed"] == [0, 1, 2]
    mean = next(c for c in report["claims"] if c["claim"] == "mean")
    assert mean["pass_rate"] == 1.0 and 0 <= mean["median"] <= 1 and mean["min_discrimination"] > 2
