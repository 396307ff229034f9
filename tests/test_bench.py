"""`lmbook bench ensemble` at a tiny size: the JSON it prints, agreement of the three methods, and
exit 2 for bad arguments."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from lmbook.engine.bench import (
    _data,
    _lrs,
    _models,
    ensemble_bench,
    train_loop,
    train_mlp,
    train_vmap,
)
from lmbook.engine.cli import main
from lmbook.errors import UsageError

KEYS = {
    "models",
    "steps",
    "width",
    "batch",
    "threads",
    "torch",
    "loop_seconds",
    "ensemble_seconds",
    "speedup",
    "vmap_seconds",
    "mlp_seconds",
    "agree",
}


def lmbook(*args):
    return subprocess.run(
        [sys.executable, "-m", "lmbook", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_three_methods_agree_in_float64():
    x, y = _data(16, 5, torch.float64)
    lrs = _lrs(3, torch.float64)
    finals = [
        f(_models(3, 5, 4, torch.float64), x, y, lrs, 10)
        for f in (train_loop, train_vmap, train_mlp)
    ]
    assert torch.allclose(finals[0], finals[1], rtol=1e-12, atol=0)
    assert torch.allclose(finals[0], finals[2], rtol=1e-12, atol=0)
    assert finals[0].unique().numel() == 3  # three different models and step sizes


def test_bench_in_process():
    r = ensemble_bench(models=3, width=4, steps=3, batch=8, threads=1)
    assert (
        KEYS <= set(r) and r["agree"] and r["models"] == 3 and r["steps"] == 3 and r["threads"] == 1
    )
    for bad in (
        dict(models=0),
        dict(steps=-1),
        dict(width=2.5),
        dict(threads=0),
        dict(dtype="float16"),
    ):
        with pytest.raises(UsageError):
            ensemble_bench(**bad)


def test_cli_json_and_exit_codes():
    done = lmbook(
        "bench",
        "ensemble",
        "--models",
        "3",
        "--width",
        "4",
        "--steps",
        "3",
        "--batch",
        "8",
        "--format",
        "json",
    )
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)
    assert (
        KEYS <= set(r) and r["width"] == 4 and r["batch"] == 8 and r["torch"] == torch.__version__
    )
    done = lmbook("bench", "ensemble", "--models", "0")
    assert done.returncode == 2 and "--models must be a positive integer" in done.stderr


def test_cli_bad_arguments_in_process(
    capsys,
):  # the same main() as above, without a second interpreter
    assert main(["bench", "no-such-bench"]) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark 'no-such-bench'" in err and "ensemble" in err
    assert main(["bench", "ensemble", "--steps", "0"]) == 2 and "--steps" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["bench", "ensemble", "--width", "wide"])
    assert e.value.code == 2
