"""Profiles, devices, seeding and exact arithmetic, in one place.

- profile "ci": a 2-core CPU, about a minute per chapter; sizes small but statistically meaningful.
- profile "full": one large GPU (H200 class), sizes of the original papers or larger.
- device "auto" is CUDA when present, else CPU; "cuda" without CUDA is an error, never a fallback.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import torch

from .errors import UsageError

PROFILES = {
    "ci": "2-core CPU, about a minute per chapter",
    "full": "one large GPU, the papers' sizes or larger, a few minutes per chapter",
}
DEVICES = ("auto", "cpu", "cuda")


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise UsageError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    return profile


def default_profile() -> str:
    """ "ci" on every device: a reader's laptop GPU must not get runs sized for an H200; the full
    profile is asked for explicitly (`--profile full`)."""
    return "ci"


def resolve_device(device: str = "auto") -> torch.device:
    """auto -> cuda when present else cpu; cuda without CUDA is a UsageError naming the fix."""
    name = str(device)
    if name not in DEVICES and not name.startswith("cuda:"):
        raise UsageError(f"unknown device {name!r}; choose one of: {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(
            f"device {name!r} was asked for but CUDA is not available (torch {torch.__version__}); "
            "use --device cpu or --device auto, or install a CUDA build of torch on a GPU machine"
        )
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """A human name for the record: the GPU model, or the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def sizes(profile: str, **per_profile) -> SimpleNamespace:
    """Pick a chapter's sizes for `profile`: sizes(profile, ci=dict(...), full=dict(...))."""
    check_profile(profile)
    missing = [p for p in PROFILES if p not in per_profile]
    if missing:
        raise UsageError(f"sizes() needs a dict for every profile; missing: {', '.join(missing)}")
    keys = {p: set(per_profile[p]) for p in PROFILES}
    for p in PROFILES:
        odd = keys[p] - set.intersection(*keys.values())
        if odd:
            raise UsageError(
                f"sizes(): {', '.join(sorted(odd))} set for profile {p!r} only; "
                "every profile needs the same keys"
            )
    return SimpleNamespace(**per_profile[profile])


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU torch.Generator seeded the same."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def device_generator(generator: torch.Generator, device) -> torch.Generator:
    """A torch.Generator on `device`, seeded from `generator` (the chapter's CPU generator from
    `seed_everything`), so that the chapter's seed fixes every draw made on the device too."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=torch.device(device)).manual_seed(seed)


def exact_arithmetic() -> None:
    """float64 by default and TF32 off, for claims that need exactness."""
    torch.set_default_dtype(torch.float64)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def start(profile: str, device: str, seed: int, results_dir: str = "", chapter: str | None = None):
    """The prologue of every chapter: check the profile, pick the device, float64 with TF32 off,
    seed everything, and open the chapter's claims. Returns (device, generator, claims).

    The chapter id is `chapter`, else the `lmbook_chapter` that the runner injects from the
    chapter's front matter, else "interactive" (a notebook opened by hand)."""
    import sys

    from .claims import Claims

    check_profile(profile)
    dev = resolve_device(device)
    exact_arithmetic()
    gen = seed_everything(seed)
    chapter = chapter or sys._getframe(1).f_globals.get("lmbook_chapter") or "interactive"
    return dev, gen, Claims(chapter, profile, device_name(dev), seed, results_dir)
