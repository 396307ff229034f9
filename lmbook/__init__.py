"""lmbook: the library behind *Learning Mechanics, executable*. A chapter starts with
`dev, gen, claims = lmbook.start(profile, device, seed, results_dir)` and states its claims with
`claims.agrees(...)` and `claims.breaks(...)`, budgets as `Tol`s and rivals as `Rival`s."""

from .claims import ClaimRecord, Claims, Rival, Tol
from .eigenlearning import eigenlearning
from .errors import ClaimFailed, UsageError
from .kernels import relu_nngp_ntk
from .profiles import (
    PROFILES,
    default_profile,
    device_generator,
    device_name,
    exact_arithmetic,
    resolve_device,
    seed_everything,
    sizes,
    start,
)
from .representations import cka
from .stats import Estimate

__version__ = "0.1.0"
__all__ = [
    "Claims",
    "ClaimRecord",
    "ClaimFailed",
    "Estimate",
    "Rival",
    "Tol",
    "UsageError",
    "PROFILES",
    "default_profile",
    "device_generator",
    "device_name",
    "exact_arithmetic",
    "resolve_device",
    "seed_everything",
    "sizes",
    "start",
    "relu_nngp_ntk",
    "eigenlearning",
    "cka",
]
