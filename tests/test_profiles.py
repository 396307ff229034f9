import pytest
import torch

import lmbook
from lmbook import UsageError
from lmbook.profiles import check_profile, resolve_device, seed_everything, sizes


def test_profiles():
    assert check_profile("ci") == "ci" and check_profile("full") == "full"
    with pytest.raises(UsageError, match="choose one of: ci, full"):
        check_profile("huge")


def test_device_auto_and_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(UsageError, match="choose one of: auto, cpu, cuda"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(UsageError, match="CUDA is not available.*--device cpu"):
        resolve_device("cuda")


def test_sizes_picks_the_profile():
    cfg = sizes("ci", ci=dict(n=3), full=dict(n=300))
    assert cfg.n == 3 and sizes("full", ci=dict(n=3), full=dict(n=300)).n == 300
    with pytest.raises(UsageError, match="missing: full"):
        sizes("ci", ci=dict(n=3))
    with pytest.raises(UsageError, match="m set for profile 'full' only"):
        sizes("ci", ci=dict(n=3), full=dict(n=300, m=1))


def test_start_is_the_prologue(tmp_path, monkeypatch):
    old = torch.get_default_dtype()
    try:
        monkeypatch.setitem(globals(), "lmbook_chapter", "injected")  # what the runner injects
        dev, gen, claims = lmbook.start("ci", "cpu", 3, str(tmp_path))
        assert dev.type == "cpu" and claims.chapter == "injected" and claims.seed == 3
        assert torch.get_default_dtype() == torch.float64
        assert torch.equal(
            torch.randn(2, generator=gen), torch.randn(2, generator=seed_everything(3))
        )
        assert lmbook.start("ci", "cpu", 0, chapter="named")[2].chapter == "named"
        with pytest.raises(UsageError, match="choose one of"):
            lmbook.start("huge", "cpu", 0)
    finally:
        torch.set_default_dtype(old)


def test_seeding_is_reproducible():
    a = torch.randn(3, generator=seed_everything(7))
    b = torch.randn(3, generator=seed_everything(7))
    c = torch.randn(3, generator=seed_everything(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_exact_arithmetic():
    old = torch.get_default_dtype()
    try:
        lmbook.exact_arithmetic()
        assert torch.get_default_dtype() == torch.float64
        assert not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.set_default_dtype(old)


def test_device_generator_is_seeded():
    a = lmbook.device_generator(torch.Generator().manual_seed(5), "cpu")
    b = lmbook.device_generator(torch.Generator().manual_seed(5), "cpu")
    assert torch.equal(torch.randn(3, generator=a), torch.randn(3, generator=b))
