"""Claims: one call records a prediction-versus-measurement comparison and asserts it.

Conventions
- `tolerance` is an absolute half-width on the scale of `predicted`; `se` is the standard error
  of `measured` (for paired per-seed predictions: of the measured-minus-predicted difference).
- A claim of kind "agrees" passes when |measured - predicted| <= tolerance + 2 se, every number
  is finite, and (with a rival) |measured - rival| > tolerance + 2 se.
- A claim of kind "breaks" (the "where the theory breaks" section) passes when the prediction
  misses: |measured - predicted| > tolerance + 2 se, every number finite.
- Every check writes its record as JSON (atomically) before it raises, so a failed run still
  leaves a complete ledger.
- The environment variable LMBOOK_PREDICTION_SCALE (default 1) multiplies every prediction.
  It exists only to prove that the suite can fail; the factor is stored in the record.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import re
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from .errors import ClaimFailed, UsageError

KINDS = ("agrees", "breaks")
SE_FACTOR = 2.0
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclasses.dataclass
class ClaimRecord:
    chapter: str
    claim: str
    statement: str
    kind: str
    predicted: float
    measured: float
    se: float | None
    tolerance: float
    tolerance_origin: str
    rival: float | None
    rival_name: str | None
    passed: bool
    miss: float
    allowed: float
    profile: str
    device: str
    seed: int
    versions: dict
    wall_seconds: float
    created: str
    prediction_scale: float = 1.0

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, allow_nan=True)


def versions(names=("lmbook", "torch", "numpy", "sympy")) -> dict:
    """The Python version and those of the installed distributions `names` (None where absent)."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def _finite(*xs) -> bool:
    return all(x is not None and math.isfinite(x) for x in xs)


def _as_float(name: str, value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UsageError(f"claim {name} must be a number, got {value!r}") from None


def evaluate(kind, predicted, measured, tolerance, se=None, rival=None):
    """(passed, miss, allowed) for one comparison under the rules in the module docstring."""
    allowed = tolerance + SE_FACTOR * (se or 0.0)
    miss = abs(measured - predicted) if _finite(measured, predicted) else math.nan
    if not _finite(predicted, measured, tolerance, allowed) or (rival is not None and not _finite(rival)):
        return False, miss, allowed
    if kind == "breaks":
        return miss > allowed, miss, allowed
    rejects_rival = rival is None or abs(measured - rival) > allowed
    return (miss <= allowed and rejects_rival), miss, allowed


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.6g}"


def failure_message(r: ClaimRecord) -> str:
    rel = f" ({r.miss / abs(r.predicted):.1%} of predicted)" if _finite(r.miss, r.predicted) and r.predicted else ""
    se = f" +/- {_fmt(r.se)} (SE)" if r.se else ""
    head = f"claim {r.chapter}/{r.claim} failed: {r.statement}\n"
    numbers = (f"  predicted {_fmt(r.predicted)}, measured {_fmt(r.measured)}{se}; "
               f"missed by {_fmt(r.miss)}{rel}; allowed {_fmt(r.allowed)} "
               f"(tolerance {_fmt(r.tolerance)} + {SE_FACTOR:g} SE; origin: {r.tolerance_origin})")
    if not _finite(r.predicted, r.measured, r.tolerance, r.allowed):
        why = "\n  a NaN or infinite value never passes"
    elif r.kind == "breaks":
        why = "\n  the theory was expected to break here, but its prediction held within tolerance"
    elif r.miss <= r.allowed and r.rival is not None:
        why = (f"\n  the measurement is also within tolerance of the rival '{r.rival_name}' "
               f"({_fmt(r.rival)}): the tolerance cannot tell the theories apart")
    else:
        why = "\n  the measurement is outside the tolerance of the prediction"
    return head + numbers + why


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Claims:
    """The claims of one chapter run. Records go to `results_dir` (one JSON file per claim);
    an empty `results_dir` keeps them in memory only (interactive use)."""

    def __init__(self, chapter: str, profile: str, device, seed: int, results_dir: str | os.PathLike = ""):
        if not _ID.match(chapter or ""):
            raise UsageError(f"chapter id {chapter!r} must be letters, digits, '-', '_' or '.'")
        self.chapter, self.profile, self.device, self.seed = chapter, profile, str(device), int(seed)
        self.results_dir = Path(results_dir) if results_dir else None
        self.records: list[ClaimRecord] = []
        self._t0 = time.perf_counter()

    def check(self, claim, statement, predicted, measured, tolerance, tolerance_origin,
              se=None, rival=None, rival_name=None, kind="agrees") -> ClaimRecord:
        """Record the claim and raise ClaimFailed unless it holds (rules: module docstring)."""
        if not _ID.match(str(claim)):
            raise UsageError(f"claim id {claim!r} must be letters, digits, '-', '_' or '.'")
        if any(r.claim == claim for r in self.records):
            if self.results_dir is not None:
                raise UsageError(f"claim id {claim!r} is used twice in chapter {self.chapter}; give each claim its own id")
            self.records = [r for r in self.records if r.claim != claim]   # interactive: a cell run again
        if kind not in KINDS:
            raise UsageError(f"claim kind {kind!r} is unknown; use one of {', '.join(KINDS)}")
        if not str(statement).strip():
            raise UsageError(f"claim {claim}: the statement is empty; say in one line what is claimed")
        if not str(tolerance_origin or "").strip():
            raise UsageError(f"claim {claim}: tolerance_origin is required; say where the tolerance comes "
                             "from (seed spread, a finite-size correction, discretisation error)")
        tolerance = _as_float("tolerance", tolerance)
        if tolerance < 0:
            raise UsageError(f"claim {claim}: tolerance must be a non-negative half-width, got {tolerance}")
        if rival is not None and not rival_name:
            raise UsageError(f"claim {claim}: a rival needs rival_name (which theory predicts it)")
        try:
            scale = float(os.environ.get("LMBOOK_PREDICTION_SCALE", "1") or 1)
        except ValueError:
            raise UsageError("LMBOOK_PREDICTION_SCALE must be a number such as 1.2; unset it for normal runs") from None
        predicted = _as_float("predicted", predicted) * scale
        measured = _as_float("measured", measured)
        se = None if se is None else _as_float("se", se)
        if se is not None and math.isfinite(se) and se < 0:
            raise UsageError(f"claim {claim}: se must be a non-negative standard error, got {se}")
        rival = None if rival is None else _as_float("rival", rival)
        passed, miss, allowed = evaluate(kind, predicted, measured, tolerance, se, rival)
        record = ClaimRecord(
            chapter=self.chapter, claim=str(claim), statement=str(statement).strip(), kind=kind,
            predicted=predicted, measured=measured, se=se, tolerance=tolerance,
            tolerance_origin=str(tolerance_origin).strip(), rival=rival, rival_name=rival_name,
            passed=bool(passed), miss=miss, allowed=allowed, profile=self.profile, device=self.device,
            seed=self.seed, versions=versions(), wall_seconds=round(time.perf_counter() - self._t0, 3),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"), prediction_scale=scale)
        self.records.append(record)
        if self.results_dir is not None:
            write_atomic(self.results_dir / f"{claim}.json", record.to_json())
        if not passed:
            raise ClaimFailed(failure_message(record))
        return record

    def breaks(self, claim, statement, predicted, measured, tolerance, tolerance_origin, se=None) -> ClaimRecord:
        """A "where the theory breaks" claim: passes when the prediction misses by more than allowed."""
        return self.check(claim, statement, predicted, measured, tolerance, tolerance_origin, se=se, kind="breaks")

    def table(self):
        """The records as a table that renders in a notebook (HTML) and in a terminal."""
        from .ledger import LedgerTable

        return LedgerTable([dataclasses.asdict(r) for r in self.records], show_chapter=False)
