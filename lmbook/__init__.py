"""lmbook: the library behind *Learning Mechanics, executable*."""
from .claims import Claims, ClaimRecord
from .errors import ClaimFailed, UsageError
from .kernels import relu_nngp_ntk
from .profiles import (PROFILES, default_profile, device_generator, device_name, exact_arithmetic, resolve_device,
                       seed_everything, sizes)

__version__ = "0.1.0"
__all__ = ["Claims", "ClaimRecord", "ClaimFailed", "UsageError", "PROFILES", "default_profile",
           "device_generator", "device_name", "exact_arithmetic", "resolve_device", "seed_everything", "sizes", "relu_nngp_ntk"]
