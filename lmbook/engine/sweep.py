"""Calibration: run chapters over many seeds and report, per claim, the pass rate and the
distribution of its margin ratio.

The margin ratio of a claim is miss/allowed for an "agrees" claim and allowed/miss for a "breaks"
claim: below 1 the claim passes, and a claim whose median ratio is above MEDIAN_LIMIT usually sits
near the edge of its band, so it is mis-specified (the standard, book/claim-standard.md). A chapter
whose predictions are right fails a seed with probability at most lmbook.stats.ALPHA; the sweep
fails (exit 1) when a chapter's number of failing seeds is improbable under that rate (one-sided
binomial test at level ALPHA), or when a claim's median ratio is above MEDIAN_LIMIT.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import scipy.stats

from ..errors import UsageError
from ..records import write_atomic
from ..stats import ALPHA
from .ledger import load_records
from .runner import run_chapters

MEDIAN_LIMIT = 0.7
SWEEP_FILE = Path("book") / "calibration" / "sweep.json"


def parse_seeds(text: str) -> list[int]:
    """'100-119' or '0,1,5' or '3' -> the seeds."""
    seeds = []
    for part in str(text).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise UsageError(f"--seeds {text!r}: give a range A-B (e.g. 100-119) or a list A,B,C")
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        if b < a:
            raise UsageError(
                f"--seeds {text!r}: the range {a}-{b} is empty; write the smaller seed first"
            )
        seeds += range(a, b + 1)
    return sorted(set(seeds))


def margin(record: dict) -> float:
    """miss/allowed (agrees) or allowed/miss (breaks); NaN when a number is missing."""
    miss, allowed = record.get("miss"), record.get("allowed")
    if miss is None or allowed is None or not (math.isfinite(miss) and math.isfinite(allowed)):
        return math.nan
    if record.get("kind") == "breaks":
        return allowed / miss if miss > 0 else math.inf
    return miss / allowed if allowed > 0 else (0.0 if miss == 0 else math.inf)


def too_many_failures(failed: int, runs: int, alpha: float = ALPHA) -> bool:
    """P(at least `failed` failures in `runs` | failure rate alpha) < alpha."""
    return failed > 0 and scipy.stats.binom.sf(failed - 1, runs, alpha) < alpha


def sweep(
    chapters,
    seeds: list[int],
    out: Path,
    profile: str = "ci",
    device: str = "auto",
    jobs: int = 1,
    progress=print,
) -> dict:
    """Run every chapter at every seed and return the report.

    One run folder per seed under `out`, reused when current.
    """
    out = Path(out)
    per_chapter = {
        c.id: {"title": c.title, "seeds_passed": [], "seeds_failed": [], "wall_seconds": []}
        for c in chapters
    }
    per_claim: dict[tuple, dict] = {}
    for seed in seeds:
        folder = out / f"seed-{seed}"
        results = run_chapters(chapters, profile, device, seed, folder, jobs=jobs)
        records = load_records(folder) if folder.is_dir() else []
        for r in results:
            ch = per_chapter[r.id]
            (ch["seeds_passed"] if r.ok else ch["seeds_failed"]).append(seed)
            ch["wall_seconds"].append(r.wall_seconds)
        for rec in records:
            if rec["chapter"] not in per_chapter:
                continue
            c = per_claim.setdefault(
                (rec["chapter"], rec["claim"]),
                {
                    "chapter": rec["chapter"],
                    "claim": rec["claim"],
                    "kind": rec.get("kind"),
                    "passed": 0,
                    "runs": 0,
                    "ratios": [],
                    "discrimination": [],
                },
            )
            c["runs"] += 1
            c["passed"] += bool(rec["passed"])
            c["ratios"].append(margin(rec))
            if rec.get("discrimination") is not None:
                c["discrimination"].append(rec["discrimination"])
        progress(f"seed {seed}: " + ", ".join(f"{r.id} {r.status}" for r in results))
    claims = []
    for c in per_claim.values():
        ratios = np.array(c.pop("ratios"), dtype=float)
        disc = c.pop("discrimination")
        finite = ratios[np.isfinite(ratios)]
        c.update(
            pass_rate=c["passed"] / c["runs"],
            median=float(np.median(ratios)) if ratios.size else math.nan,
            p90=float(np.quantile(ratios, 0.9)) if ratios.size else math.nan,
            max=float(ratios.max()) if finite.size == ratios.size and ratios.size else math.inf,
            min_discrimination=min(disc) if disc else None,
        )
        c["flag"] = (
            "median margin above 0.7: mis-specified" if not c["median"] <= MEDIAN_LIMIT else ""
        )
        claims.append(c)
    for ch in per_chapter.values():
        runs = len(ch["seeds_passed"]) + len(ch["seeds_failed"])
        ch["flag"] = (
            "fails more often than the 1% family-wise rate allows"
            if too_many_failures(len(ch["seeds_failed"]), runs)
            else ""
        )
    ok = not any(c["flag"] for c in claims) and not any(ch["flag"] for ch in per_chapter.values())
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "profile": profile,
        "seeds": seeds,
        "alpha": ALPHA,
        "median_limit": MEDIAN_LIMIT,
        "ok": ok,
        "chapters": per_chapter,
        "claims": claims,
    }


def text_report(report: dict) -> str:
    seeds = report["seeds"]
    span = (
        f"{seeds[0]}-{seeds[-1]}"
        if seeds == list(range(seeds[0], seeds[-1] + 1))
        else ",".join(map(str, seeds))
    )
    lines = [
        f"sweep over seeds {span} ({len(seeds)} seeds, profile {report['profile']})",
        "",
        f"{'chapter':<22} {'seeds passed':>12}  {'mean wall':>9}  flag",
    ]
    for cid, ch in report["chapters"].items():
        n = len(ch["seeds_passed"]) + len(ch["seeds_failed"])
        wall = np.mean(ch["wall_seconds"]) if ch["wall_seconds"] else math.nan
        failed = (
            f" (failed: {', '.join(map(str, ch['seeds_failed']))})" if ch["seeds_failed"] else ""
        )
        lines.append(
            f"{cid:<22} {len(ch['seeds_passed']):>5}/{n:<6}  {wall:8.1f}s  {ch['flag']}{failed}"
        )
    lines += [
        "",
        f"{'chapter/claim':<48} {'kind':<7} {'pass':>6} {'median':>7} {'p90':>6} {'max':>6} "
        f"{'min disc':>8}  flag",
    ]
    for c in report["claims"]:
        disc = "-" if c["min_discrimination"] is None else f"{c['min_discrimination']:.3g}"
        lines.append(
            f"{c['chapter'] + '/' + c['claim']:<48} {c['kind']:<7} {c['pass_rate']:6.0%} "
            f"{c['median']:7.2f} {c['p90']:6.2f} {c['max']:6.2f} {disc:>8}  {c['flag']}"
        )
    lines += [
        "",
        "margin = miss/allowed (agrees) or allowed/miss (breaks); a claim passes below 1, "
        "and a median "
        f"above {MEDIAN_LIMIT} marks it mis-specified",
        "calibrated: " + ("yes" if report["ok"] else "NO"),
    ]
    return "\n".join(lines)


def write_report(report: dict, path: Path) -> Path:
    write_atomic(Path(path), json.dumps(report, indent=2) + "\n")
    return Path(path)
