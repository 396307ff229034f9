"""Claim drift between two runs: `lmbook claims diff OLD NEW`.

OLD and NEW are run folders (their `claims/` records) or ledger JSON files (a list of claim
records, as `lmbook claims --format json` prints and the site publishes as `claims.json`).

Per claim (chapter, claim id) it reports
- the status change: new, removed, pass -> fail, fail -> pass;
- the drift z: the change of the measured value in units of the combined uncertainty,
  z = (m_new - m_old) / sqrt(se_old^2 + se_new^2). For a paired claim (per-replicate predictions,
  which move with the seed) the drift is that of the residual measured - predicted. A claim measured
  exactly (no SE on either side) is measured in allowed bands instead, and says so;
- a changed theory or budget: the prediction moved (an unpaired claim whose predicted value
  changed), or the systematic budget's named terms changed. These are not drift, and are listed
  apart.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import UsageError
from .ledger import load_records

REL_SAME = 1e-9  # predictions equal to this relative precision are the same prediction


def load_ledger(path) -> list[dict]:
    """Claim records from a run folder or a ledger JSON file (list, or {"claims": [...]})."""
    path = Path(path)
    if path.is_dir():
        return load_records(path)
    if not path.is_file():
        raise UsageError(
            f"no run folder or ledger file at {path}; pass a run folder (lmbook run --out DIR) "
            "or a claims.json file"
        )
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path} is not a ledger JSON file ({e})") from None
    if isinstance(data, dict):
        data = data.get("claims")
    if not isinstance(data, list) or not all(
        isinstance(r, dict) and {"chapter", "claim", "measured", "passed"} <= r.keys() for r in data
    ):
        raise UsageError(
            f"{path} is not a ledger: expected a list of claim records "
            "(`lmbook claims DIR --format json` writes one)"
        )
    return data


def _paired(r: dict) -> bool:
    return "paired" in str(r.get("stat_method", ""))


def _budget(r: dict) -> list[str]:
    terms = r.get("systematic_terms")
    if terms is not None:
        return sorted(str(t.get("origin", "")) for t in terms)
    return [str(r.get("tolerance_origin", ""))]


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(float(a), float(b), rel_tol=REL_SAME, abs_tol=1e-300)


def _num(x) -> float:
    return float("nan") if x is None else float(x)


def compare(old: list[dict], new: list[dict]) -> list[dict]:
    """One row per claim in either ledger (see the module docstring), in NEW's order."""
    before = {(r["chapter"], r["claim"]): r for r in old}
    after = {(r["chapter"], r["claim"]): r for r in new}
    keys = list(after) + [k for k in before if k not in after]
    rows = []
    for key in keys:
        o, n = before.get(key), after.get(key)
        row = {"chapter": key[0], "claim": key[1], "kind": (n or o).get("kind", "agrees")}
        if o is None or n is None:
            row["change"] = "new" if o is None else "removed"
            row["passed"] = bool((n or o)["passed"])
            rows.append(row)
            continue
        row["change"] = {
            (True, False): "pass -> fail",
            (False, True): "fail -> pass",
        }.get((bool(o["passed"]), bool(n["passed"])), "")
        row["passed"] = bool(n["passed"])
        row["measured_old"], row["measured_new"] = _num(o["measured"]), _num(n["measured"])
        paired = _paired(o) and _paired(n)
        moved = not paired and not _same(o.get("predicted"), n.get("predicted"))
        if moved:
            row["prediction_moved"] = [_num(o.get("predicted")), _num(n.get("predicted"))]
        if _budget(o) != _budget(n):
            row["budget_changed"] = True
        delta = row["measured_new"] - row["measured_old"]
        if paired:
            delta -= _num(n.get("predicted")) - _num(o.get("predicted"))
        se = math.hypot(_num(o.get("se") or 0.0), _num(n.get("se") or 0.0))
        unit = "SE"
        if not se > 0:
            se, unit = max(_num(o.get("allowed")), _num(n.get("allowed"))), "allowed"
        if delta == 0:
            z = 0.0
        elif se > 0:
            z = delta / se
        else:
            z = math.copysign(math.inf, delta)
        row["drift"], row["drift_unit"] = z, unit
        rows.append(row)
    return rows


def verdict(rows: list[dict], max_drift: float | None = None) -> tuple[int, list[str]]:
    """Exit code (1 on a new failure, or on drift beyond max_drift) and the reasons."""
    reasons = []
    for r in rows:
        name = f"{r['chapter']}/{r['claim']}"
        if r["change"] == "pass -> fail" or (r["change"] == "new" and not r["passed"]):
            reasons.append(f"{name}: {r['change'] or 'new'} and failing")
        elif (
            max_drift is not None
            and "drift" in r
            and not math.isnan(r["drift"])
            and abs(r["drift"]) > max_drift
            and "prediction_moved" not in r
        ):
            reasons.append(f"{name}: drifted {r['drift']:+.2f} {r['drift_unit']} (> {max_drift})")
    return (1 if reasons else 0), reasons


def _fmt(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


def _cells(r: dict) -> tuple[str, ...]:
    note = []
    if "prediction_moved" in r:
        a, b = r["prediction_moved"]
        note.append(f"prediction moved {_fmt(a)} -> {_fmt(b)}")
    if r.get("budget_changed"):
        note.append("budget changed")
    drift = f"{r['drift']:+.2f} {r['drift_unit']}" if "drift" in r else "-"
    measured = (
        f"{_fmt(r.get('measured_old'))} -> {_fmt(r.get('measured_new'))}"
        if "measured_old" in r
        else "-"
    )
    return (f"{r['chapter']}/{r['claim']}", r["change"] or "-", measured, drift, "; ".join(note))


HEAD = ("claim", "change", "measured old -> new", "drift", "theory or budget")


def _summary(rows: list[dict], reasons: list[str]) -> str:
    changed = sum(bool(r["change"]) for r in rows)
    return f"{len(rows)} claims, {changed} changed status" + (
        ", " + "; ".join(reasons) if reasons else ", no new failure"
    )


def text_report(rows: list[dict], reasons: list[str]) -> str:
    body = [_cells(r) for r in rows]
    widths = [max([len(h)] + [len(b[i]) for b in body]) for i, h in enumerate(HEAD)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEAD, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines + [_summary(rows, reasons)])


def markdown_report(rows: list[dict], reasons: list[str]) -> str:
    """The same report as a Markdown table (the Pages workflow writes it to the job summary)."""
    out = ["| " + " | ".join(HEAD) + " |", "|---|---|---|---|---|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |" for r in rows]
    return "\n".join(out + ["", _summary(rows, reasons)])
