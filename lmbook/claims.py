"""Claims: one call records a prediction-versus-measurement comparison and asserts it.

The claim standard (book/claim-standard.md explains it to readers):

- `measured` is per-replicate samples (seeds, chains, networks: a 1-D array or tensor), an
  `Estimate` (a value with an SE obtained another way, e.g. a jackknife, for quantities with no
  per-replicate value; the record says how), or a plain number (exact: no statistical error).
- `predicted` is a number, or per-replicate predictions of the same length as the samples
  (paired: the band is computed on the differences measured - predicted).
- allowed = systematic + statistical. The systematic budget is a `Tol` or a sum of `Tol`s, each a
  value with its formula or control experiment named. The statistical band is computed here, from
  the replicates (lmbook.stats: batch-means t interval at family-wise 1% over 20 claims).
- "agrees" passes when |measured - predicted| <= allowed; with a `Rival`, also when the rival lies
  at least MIN_DISCRIMINATION bands away (discrimination = |rival - predicted| / allowed), so the
  measurement cannot sit in both bands.
- "breaks" passes when |measured - predicted| > allowed: the theory, outside its assumptions, fails.
- NaN or infinity never passes. A failed claim raises ClaimFailed naming predicted, measured and
  the miss; the record (JSON) is written atomically first.
- LMBOOK_PREDICTION_SCALE (default 1) multiplies every prediction, to prove the book can fail.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import stats
from .errors import ClaimFailed, UsageError
from .records import versions, write_atomic

KINDS = ("agrees", "breaks")
MIN_DISCRIMINATION = 2.0
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclasses.dataclass(frozen=True)
class Tol:
    """One named term of a systematic budget: an absolute half-width on the prediction's scale, and
    its origin (the formula, or the control experiment that measured it). Terms add: Tol + Tol."""

    value: float
    origin: str

    def __post_init__(self):
        object.__setattr__(self, "value", float(self.value))
        if not str(self.origin).strip():
            raise UsageError(
                "Tol needs its origin: the formula or control experiment behind the value"
            )
        if not self.value >= 0:
            raise UsageError(
                f"Tol({self.value!r}, {self.origin!r}): a budget term is a non-negative half-width"
            )

    @property
    def terms(self) -> tuple[Tol, ...]:
        return getattr(self, "_terms", (self,))

    def __add__(self, other: Tol) -> Tol:
        if not isinstance(other, Tol):
            return NotImplemented
        out = Tol(self.value + other.value, f"{self.origin} + {other.origin}")
        object.__setattr__(out, "_terms", self.terms + other.terms)
        return out

    def __radd__(self, other):
        return self if other == 0 else NotImplemented


NO_SYSTEMATIC = "none: the prediction is exact for this experiment"
BREAKS_VERDICT = "MISSES, as the theory must here"


@dataclasses.dataclass(frozen=True)
class Rival:
    """The strongest competing prediction: its value and who makes it."""

    value: float
    name: str

    def __post_init__(self):
        object.__setattr__(self, "value", float(self.value))
        if not str(self.name).strip():
            raise UsageError("Rival needs its name: which theory or practice predicts the value")


@dataclasses.dataclass
class ClaimRecord:
    chapter: str
    claim: str
    statement: str
    kind: str
    predicted: float
    measured: float
    se: float | None
    n: int
    stat_method: str
    stat_band: float
    tolerance: float  # the systematic budget (sum of the terms)
    tolerance_origin: str
    systematic_terms: list
    rival: float | None
    rival_name: str | None
    discrimination: float | None
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
    # The SE of the measured value itself (plain SE of the replicates, as the chapters' tables print
    # it; an Estimate's own SE). `se` is the SE the band is built from: of measured - predicted,
    # which for paired per-replicate predictions is smaller.
    measured_se: float | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, allow_nan=True)

    def verdict(self) -> str:
        """One line, printed where the claim is made: the verdict (PASS, FAIL, or for a breaks claim
        that does what it claims "MISSES, as the theory must here"), the claim, predicted,
        measured ± SE, the miss against the band (systematic + statistical), and the rival."""
        if self.kind == "breaks":
            word = BREAKS_VERDICT if self.passed else "FAIL (the theory held where it must miss)"
            compare = ">" if self.passed else "<="
        else:
            word = "PASS" if self.passed else "FAIL"
            compare = "<=" if self.passed else ">"
        se = self.measured_se if self.measured_se is not None else self.se
        se = f" ± {_fmt(se)} (SE)" if se else ""
        if self.kind == "breaks":
            rival = "; no rival (a breaks claim)"
        elif self.rival is not None:
            rival = (
                f"; rival {self.rival_name}: {_fmt(self.rival)}, "
                f"{_fmt(self.discrimination)} bands away (>= {MIN_DISCRIMINATION:g} needed)"
            )
        else:
            rival = "; no rival"
        sep = " " if word in ("PASS", "FAIL") else ": "
        return (
            f"{word}{sep}{self.claim}: predicted {_fmt(self.predicted)}, "
            f"measured {_fmt(self.measured)}{se}; "
            f"miss {_fmt(self.miss)} {compare} band {_fmt(self.allowed)} "
            f"(systematic {_fmt(self.tolerance)} + statistical {_fmt(self.stat_band)}){rival}"
        )

    def _ipython_display_(self):  # the claim call printed its verdict already
        pass


def _finite(*xs) -> bool:
    return all(x is not None and math.isfinite(x) for x in xs)


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.4g}"


def _number(name: str, value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UsageError(f"claim {name} must be a number, got {value!r}") from None


def _prediction_scale() -> float:
    try:
        return float(os.environ.get("LMBOOK_PREDICTION_SCALE", "1") or 1)
    except ValueError:
        raise UsageError(
            "LMBOOK_PREDICTION_SCALE must be a number such as 1.2; unset it for normal runs"
        ) from None


def _compare(predicted, measured) -> tuple[float, stats.Estimate]:
    """(centre of the prediction, Estimate of measured - predicted) for any accepted input form."""
    p = np.asarray(predicted, dtype=float)
    if isinstance(measured, stats.Estimate):
        if p.size != 1:
            raise UsageError("an Estimate is compared with one prediction, not one per replicate")
        return float(p[0]), dataclasses.replace(
            measured, value=_number("measured", measured.value) - float(p[0])
        )
    m = stats.as_array(measured)
    if p.size not in (1, m.size):
        raise UsageError(
            f"predicted has {p.size} values and measured {m.size}: give one prediction, or one "
            "per replicate (paired)"
        )
    if m.size == 1:
        return float(p[0]), stats.Estimate(float(m[0] - p[0]), n=1)
    est = stats.estimate(m - p)
    if p.size > 1:
        est = dataclasses.replace(
            est, method=est.method + ", paired with per-replicate predictions"
        )
    return float(p.mean()), est


def _measured_se(measured) -> float | None:
    """The SE of the measured value on its own: an Estimate's SE, or the plain SE of the replicates
    (std / sqrt(n), as `stats.mean_and_se` prints in the chapters' tables); None for one value."""
    if isinstance(measured, stats.Estimate):
        se = measured.se
    else:
        m = stats.as_array(measured)
        se = float(m.std(ddof=1) / math.sqrt(m.size)) if m.size > 1 else None
    return float(se) if se is not None and se > 0 else None


def failure_message(r: ClaimRecord) -> str:
    rel = (
        f" ({r.miss / abs(r.predicted):.1%} of predicted)"
        if _finite(r.miss, r.predicted) and r.predicted
        else ""
    )
    se = f" +/- {_fmt(r.se)} (SE, {r.stat_method})" if r.se else ""
    head = f"claim {r.chapter}/{r.claim} failed: {r.statement}\n"
    numbers = (
        f"  predicted {_fmt(r.predicted)}, measured {_fmt(r.measured)}{se}; "
        f"missed by {_fmt(r.miss)}{rel}; allowed {_fmt(r.allowed)} "
        f"(systematic {_fmt(r.tolerance)}: {r.tolerance_origin}; statistical {_fmt(r.stat_band)})"
    )
    if not _finite(r.predicted, r.measured, r.allowed) or (r.se is not None and not _finite(r.se)):
        why = "\n  a NaN or infinite value never passes"
    elif r.kind == "breaks":
        why = (
            "\n  the theory was expected to break here, "
            "but its prediction held within the allowed band"
        )
    elif r.miss <= r.allowed and r.rival is not None:
        why = (
            f"\n  the rival '{r.rival_name}' ({_fmt(r.rival)}) "
            f"is only {_fmt(r.discrimination)} bands from the "
            f"prediction (at least {MIN_DISCRIMINATION:g} needed): "
            "the band cannot tell the theories apart"
        )
    else:
        why = "\n  the measurement is outside the allowed band of the prediction"
    return head + numbers + why


class Claims:
    """The claims of one chapter run. Records go to `results_dir` (one JSON file per claim);
    an empty `results_dir` keeps them in memory only (interactive use). Made by `lmbook.start`."""

    def __init__(
        self, chapter: str, profile: str, device, seed: int, results_dir: str | os.PathLike = ""
    ):
        if not _ID.match(chapter or ""):
            raise UsageError(f"chapter id {chapter!r} must be letters, digits, '-', '_' or '.'")
        self.chapter, self.profile, self.device, self.seed = (
            chapter,
            profile,
            str(device),
            int(seed),
        )
        self.results_dir = Path(results_dir) if results_dir else None
        self.records: list[ClaimRecord] = []
        self._t0 = time.perf_counter()

    def agrees(
        self,
        claim: str,
        statement: str,
        *,
        predicted,
        measured,
        systematic: Tol | None = None,
        rival: Rival | None = None,
    ) -> ClaimRecord:
        """The measurement agrees with the prediction within systematic + statistical, and the rival
        (if any) lies at least MIN_DISCRIMINATION bands away (module docstring)."""
        return self._record("agrees", claim, statement, predicted, measured, systematic, rival)

    def breaks(
        self, claim: str, statement: str, *, predicted, measured, systematic: Tol | None = None
    ) -> ClaimRecord:
        """Where the theory breaks: the prediction misses by more than systematic + statistical."""
        return self._record("breaks", claim, statement, predicted, measured, systematic, None)

    def _record(
        self, kind, claim, statement, predicted, measured, systematic, rival
    ) -> ClaimRecord:
        if not _ID.match(str(claim)):
            raise UsageError(f"claim id {claim!r} must be letters, digits, '-', '_' or '.'")
        if any(r.claim == claim for r in self.records):
            if self.results_dir is not None:
                raise UsageError(
                    f"claim id {claim!r} is used twice in chapter {self.chapter}; give each claim "
                    "its own id"
                )
            self.records = [
                r for r in self.records if r.claim != claim
            ]  # interactive: a cell run again
        if not str(statement).strip():
            raise UsageError(
                f"claim {claim}: the statement is empty; say in one line what is claimed"
            )
        if systematic is None:
            systematic = Tol(0.0, NO_SYSTEMATIC)
        if not isinstance(systematic, Tol):
            raise UsageError(
                f"claim {claim}: systematic must be a Tol (value, origin) or a sum of them, "
                f"got {systematic!r}"
            )
        if rival is not None and not isinstance(rival, Rival):
            raise UsageError(f"claim {claim}: rival must be a Rival(value, name), got {rival!r}")
        scale = _prediction_scale()
        centre, diff = _compare(stats.as_array(predicted) * scale, measured)
        measured_se = _measured_se(measured)
        band = diff.band() if _finite(diff.se) else math.nan
        allowed = systematic.value + band
        miss = abs(diff.value)
        measured_value = centre + diff.value
        discrimination = None
        if rival is not None:
            discrimination = abs(rival.value - centre) / allowed if allowed > 0 else math.inf
        ok_numbers = _finite(centre, measured_value, allowed, diff.se) and (
            rival is None or _finite(rival.value)
        )
        if not ok_numbers:
            passed = False
        elif kind == "breaks":
            passed = miss > allowed
        else:
            passed = miss <= allowed and (rival is None or discrimination >= MIN_DISCRIMINATION)
        record = ClaimRecord(
            chapter=self.chapter,
            claim=str(claim),
            statement=" ".join(str(statement).split()),
            kind=kind,
            predicted=centre,
            measured=measured_value,
            se=diff.se if diff.se else None,
            n=diff.n,
            stat_method=diff.method,
            stat_band=band,
            tolerance=systematic.value,
            tolerance_origin=systematic.origin,
            systematic_terms=[{"value": t.value, "origin": t.origin} for t in systematic.terms],
            rival=None if rival is None else rival.value,
            rival_name=None if rival is None else rival.name,
            discrimination=discrimination,
            passed=bool(passed),
            miss=miss,
            allowed=allowed,
            profile=self.profile,
            device=self.device,
            seed=self.seed,
            versions=versions(),
            wall_seconds=round(time.perf_counter() - self._t0, 3),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            prediction_scale=scale,
            measured_se=measured_se,
        )
        self.records.append(record)
        if self.results_dir is not None:
            write_atomic(self.results_dir / f"{claim}.json", record.to_json())
        print(record.verdict(), flush=True)
        if not passed:
            raise ClaimFailed(failure_message(record))
        return record
