"""The ledger: claim records read back from a run folder.

Shown as a terminal table, JSON, HTML or MyST.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UsageError

COLUMNS = ("chapter", "claim", "kind", "predicted", "measured", "allowed", "rival", "passed")


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


def _num(x, se=None) -> str:
    if x is None:
        return "-"
    s = f"{x:.4g}"
    return f"{s} ± {se:.2g}" if se else s


def _allowed(r: dict) -> str:
    """allowed = systematic + statistical (older records: the tolerance)."""
    if "stat_band" not in r:
        return _num(r.get("allowed", r.get("tolerance")))
    return f"{_num(r['allowed'])} = {_num(r['tolerance'])} + {_num(r['stat_band'])}"


def _rival(r: dict) -> str:
    if r.get("rival") is None:
        return "-"
    disc = r.get("discrimination")
    return f"{_num(r['rival'])}" + (f" ({disc:.3g} bands away)" if disc is not None else "")


def _row(r: dict) -> dict:
    return {
        "chapter": r["chapter"],
        "claim": r["claim"],
        "kind": r.get("kind", "agrees"),
        "predicted": _num(r["predicted"]),
        "measured": _num(r["measured"], r.get("se")),
        "allowed": _allowed(r),
        "rival": f"{r['rival_name']}: {_rival(r)}" if r.get("rival") is not None else "-",
        "passed": "PASS" if r["passed"] else "FAIL",
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
    return "\n".join(lines)


def markdown_table(records: list[dict], show_chapter=True) -> str:
    """A compact pipe table for MyST pages (statements and origins go in `notes_markdown`)."""
    cols = (["chapter"] if show_chapter else []) + [
        "claim",
        "predicted",
        "measured ± SE",
        "allowed = systematic + statistical",
        "rival (discrimination)",
        "result",
    ]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in records:
        row = _row(r)
        cells = ([row["chapter"]] if show_chapter else []) + [
            f"`{r['claim']}`",
            row["predicted"],
            row["measured"],
            row["allowed"],
            _rival(r),
            ("**PASS**" if r["passed"] else "**FAIL**")
            + (" (breaks, as claimed)" if r.get("kind") == "breaks" else ""),
        ]
        out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(out)


def notes_markdown(records: list[dict]) -> str:
    """Each claim's statement, the origin of its tolerance and the name of its rival.

    As a MyST list.
    """
    lines = []
    for r in records:
        rival = f" *Rival:* {_cell(r['rival_name'])}." if r.get("rival") is not None else ""
        stat = f" *Statistical:* {_cell(r['stat_method'])}." if r.get("stat_method") else ""
        lines.append(
            f"- `{r['claim']}`: {_cell(r['statement'])}. *Systematic:* "
            f"{_cell(r['tolerance_origin'])}.{stat}{rival}"
        )
    return "\n".join(lines)


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
