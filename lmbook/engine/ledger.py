"""The ledger: claim records read back from a run folder.

Shown as a terminal table, JSON, HTML or MyST.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UsageError

COLUMNS = ("chapter", "claim", "kind", "predicted", "measured", "band", "rival", "verdict")


def load_records(run_dir) -> list[dict]:
    """Every claim record under `run_dir`/claims (or `run_dir` itself).

    By chapter, in the order checked.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(
            f"no run folder at {run_dir}; run chapters first with `lmbook run --out {run_dir}`"
        )
    root = run_dir / "claims" if (run_dir / "claims").is_dir() else run_dir
    records = []
    for path in sorted(root.rglob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise UsageError(
                f"{path} is not a claim record ({e}); delete it or rerun the chapter"
            ) from None
        if isinstance(rec, dict) and {"chapter", "claim", "predicted", "measured"} <= rec.keys():
            records.append(rec)
    return sorted(
        records, key=lambda r: (r["chapter"], r.get("wall_seconds", 0.0), r["claim"])
    )  # chapter order


def incomplete_chapters(run_dir) -> list[str]:
    """Chapters with claim records but no finished run file (interrupted, or running now)."""
    run_dir = Path(run_dir)
    claims = run_dir / "claims"
    if not claims.is_dir() or not (run_dir / "runs").is_dir():
        return []
    return sorted(
        d.name
        for d in claims.iterdir()
        if d.is_dir()
        and any(d.glob("*.json"))
        and not (run_dir / "runs" / f"{d.name}.json").exists()
    )


BREAKS_VERDICT = "MISSES, as the theory must here"
NO_RIVAL = "none"
BREAKS_RIVAL = "n/a (breaks claim)"
PASS_RULE = (
    "Pass rule: an *agrees* claim passes when |measured − predicted| ≤ band, where band = "
    "systematic + statistical, and, if it names a rival, when the rival lies at least 2 bands from "
    "the prediction; a *breaks* claim passes when |measured − predicted| > band (the theory, "
    "outside its assumptions, misses). NaN or infinity never passes. Measured ± SE is the plain SE "
    "of the replicates, as in the chapter's own tables"
)


def _num(x, se=None) -> str:
    if x is None:
        return "-"
    s = f"{x:.4g}"
    return f"{s} ± {se:.2g}" if se else s


def _allowed(r: dict) -> str:
    """band = systematic + statistical (older records: the tolerance)."""
    if "stat_band" not in r:
        return _num(r.get("allowed", r.get("tolerance")))
    return f"{_num(r['allowed'])} = {_num(r['tolerance'])} + {_num(r['stat_band'])}"


def _rival(r: dict) -> str:
    """The rival's value and discrimination; 'none' for an agrees claim without a rival, and
    'n/a (breaks claim)' for a breaks claim (which has none by design)."""
    if r.get("kind") == "breaks":
        return BREAKS_RIVAL
    if r.get("rival") is None:
        return NO_RIVAL
    disc = r.get("discrimination")
    return f"{_num(r['rival'])}" + (f" ({disc:.3g} bands away)" if disc is not None else "")


def verdict_word(r: dict) -> str:
    """PASS or FAIL; a breaks claim that misses as claimed reads BREAKS_VERDICT."""
    if r.get("kind") == "breaks":
        return BREAKS_VERDICT if r["passed"] else "FAIL (held where it must miss)"
    return "PASS" if r["passed"] else "FAIL"


def _measured(r: dict) -> str:
    """measured ± the SE of the measured value itself (older records: the band's SE)."""
    se = r["measured_se"] if "measured_se" in r else r.get("se")
    return _num(r["measured"], se)


def _row(r: dict) -> dict:
    return {
        "chapter": r["chapter"],
        "claim": r["claim"],
        "kind": r.get("kind", "agrees"),
        "predicted": _num(r["predicted"]),
        "measured": _measured(r),
        "band": _allowed(r),
        "rival": (
            f"{r['rival_name']}: {_rival(r)}"
            if r.get("rival") is not None and r.get("kind") != "breaks"
            else _rival(r)
        ),
        "verdict": verdict_word(r),
    }


def text_table(records: list[dict], show_chapter=True) -> str:
    cols = [c for c in COLUMNS if show_chapter or c != "chapter"]
    rows = [_row(r) for r in records]
    widths = {c: max([len(c)] + [len(row[c]) for row in rows]) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    lines.append("  ".join("-" * widths[c] for c in cols))
    lines += ["  ".join(row[c].ljust(widths[c]) for c in cols) for row in rows]
    passed = sum(r["passed"] for r in records)
    lines.append(f"{passed}/{len(records)} claims passed")
    lines.append(PASS_RULE.replace("*", "") + ".")
    return "\n".join(lines)


def markdown_table(records: list[dict], show_chapter=True) -> str:
    """A compact pipe table for MyST pages (statements and origins go in `notes_markdown`)."""
    cols = (["chapter"] if show_chapter else []) + [
        "claim",
        "kind",
        "predicted",
        "measured ± SE",
        "band = systematic + statistical",
        "rival (bands away)",
        "verdict",
    ]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in records:
        row = _row(r)
        cells = ([row["chapter"]] if show_chapter else []) + [
            f"`{r['claim']}`",
            row["kind"],
            row["predicted"],
            row["measured"],
            row["band"],
            _rival(r),
            f"**{row['verdict']}**",
        ]
        out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(out)


def claims_table_block(records: list[dict], title: str, show_chapter=False) -> str:
    """The claims table as a MyST `{table}` with its caption: the title, the pass rule and a link to
    the glossary (every claims table of the site carries both)."""
    return "\n".join(
        [
            # a colon fence: a backtick fence's info string may not hold the {ref} role's backticks
            ":::{table} " + title + ". " + PASS_RULE + ". Terms: {ref}`glossary <claim-glossary>`.",
            ":class: lmbook-claims",
            "",
            markdown_table(records, show_chapter=show_chapter),
            ":::",
        ]
    )


def notes_markdown(records: list[dict]) -> str:
    """Each claim's statement, the origin of its tolerance and the name of its rival.

    As a MyST list.
    """
    lines = []
    for r in records:
        rival = f" *Rival:* {_cell(r['rival_name'])}." if r.get("rival") is not None else ""
        stat = f" *Statistical:* {_cell(r['stat_method'])}" if r.get("stat_method") else ""
        if (
            stat
            and r.get("measured_se")
            and r.get("se")
            and abs(r["se"] - r["measured_se"]) > (1e-3 * r["measured_se"])
        ):
            stat += f"; the band is built on the SE of measured − predicted, {_num(r['se'])}"
        stat += "." if stat else ""
        lines.append(
            f"- `{r['claim']}`: {_cell(r['statement'])}. *Systematic:* "
            f"{_cell(r['tolerance_origin'])}.{stat}{rival}"
        )
    return "\n".join(lines)


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
