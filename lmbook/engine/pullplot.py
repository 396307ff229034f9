"""The pull plot: every claim against its prediction on one figure, as particle physics draws its
results.

One row per claim, grouped by part and chapter, in the ledger's order. Two panels share the rows:
- agrees claims (left): the pull (measured - predicted) / allowed, with the measurement's standard
  error in the same units as an error bar; the band [-1, 1] (pass) is shaded, and the rival, where
  there is one, is a cross at (rival - predicted) / allowed. The axis is linear inside the band and
  logarithmic outside (symlog), so rivals fifty bands away and a pull of 0.3 are both readable.
- breaks claims (right): the miss in bands, |measured - predicted| / allowed, on a log axis; the
  claim passes beyond 1 (the theory misses, as the chapter says it must), and the region below 1
  (where the theory would still hold) is shaded.
The figure's height grows with the number of claims (about 0.17 inch per row), so 150 claims stay
readable; it is written as SVG.
"""

from __future__ import annotations

import math
from pathlib import Path

from .chapters import ROMAN

ROW_INCH = 0.17
SYMLOG_LIMIT = 200.0  # pulls beyond this are drawn at the edge, with an arrow


def _pull(x, r) -> float:
    allowed = r.get("allowed") or 0.0
    if x is None or r.get("predicted") is None or not allowed > 0:
        return math.nan
    return (float(x) - float(r["predicted"])) / float(allowed)


def _clip(v: float) -> float:
    return max(-SYMLOG_LIMIT, min(SYMLOG_LIMIT, v))


def pull_figure(records: list[dict], path, chapters=None, title: str | None = None) -> Path:
    """Draw the pull plot of `records` (claim records, ledger order) into `path` (SVG, or an open
    binary file)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..plotting import PALETTE, use_style

    use_style()
    part_of = {c.id: c.part for c in chapters or []}
    book_order = [c.id for c in chapters or []]
    first = list(dict.fromkeys(r["chapter"] for r in records))
    order = sorted(
        first,
        key=lambda cid: (
            part_of.get(cid, 9),
            book_order.index(cid) if cid in book_order else len(book_order) + first.index(cid),
        ),
    )
    rows = [r for cid in order for r in records if r["chapter"] == cid]
    n = max(1, len(rows))
    fig, (ax, ax_b) = plt.subplots(
        1,
        2,
        figsize=(7.2, 1.3 + ROW_INCH * n),
        sharey=True,
        gridspec_kw={"width_ratios": [3, 1.3], "wspace": 0.05},
        constrained_layout=True,
    )
    y = list(range(n))[::-1]
    ax.axvspan(-1, 1, color=PALETTE[2], alpha=0.15, lw=0, label="band (pass)")
    ax_b.axvspan(1e-2, 1, color=PALETTE[1], alpha=0.12, lw=0, label="theory would hold")
    ax.axvline(0, color="0.4", lw=0.8)
    ax_b.axvline(1, color="0.4", lw=0.8)
    labels, rival_drawn = [], False
    for yi, r in zip(y, rows):
        labels.append(f"{r['chapter']}/{r['claim']}")
        colour = PALETTE[0] if r.get("passed") else PALETTE[1]
        allowed = float(r.get("allowed") or 0.0)
        err = float(r.get("se") or 0.0) / allowed if allowed > 0 else 0.0
        pull = _pull(r.get("measured"), r)
        if r.get("kind") == "breaks":
            miss = abs(pull)
            if math.isfinite(miss):
                ax_b.errorbar(
                    max(miss, 1.1e-2), yi, xerr=min(err, miss * 0.99), fmt="s", color=colour,
                    mfc="white", ms=4,
                )  # fmt: skip
            continue
        if math.isfinite(pull):
            ax.errorbar(_clip(pull), yi, xerr=err, fmt="o", color=colour, mfc="white", ms=4)
        rival = _pull(r.get("rival"), r)
        if math.isfinite(rival):
            ax.plot(
                _clip(rival), yi, "x", color=PALETTE[3], ms=4,
                label=None if rival_drawn else "rival",
            )  # fmt: skip
            rival_drawn = True
    ax.set_xscale("symlog", linthresh=1.0, linscale=1.0)
    ax.set_xlim(-SYMLOG_LIMIT * 1.2, SYMLOG_LIMIT * 1.2)
    ax_b.set_xscale("log")
    ax_b.set_xlim(1e-2, 1e4)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=6.5)
    ax.set_ylim(-0.7, n - 0.3)
    ticks = [-100, -10, -1, 0, 1, 10, 100]
    ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=7)
    ax_b.set_xticks([1e-2, 1, 1e2, 1e4], ["0.01", "1", "100", "10⁴"], fontsize=7)
    ax.set_title("agrees", fontsize=8)
    ax_b.set_title("breaks", fontsize=8)
    ax.set_xlabel("(measured − predicted) / allowed", fontsize=8)
    ax_b.set_xlabel("|miss| / allowed", fontsize=8)
    ax.grid(axis="y", visible=False)
    ax_b.grid(axis="y", visible=False)
    # separators and labels between chapters
    start = 0
    for cid in order:
        count = sum(r["chapter"] == cid for r in rows)
        top = n - 1 - start + 0.5
        if start:
            for a in (ax, ax_b):
                a.axhline(top, color="0.6", lw=0.6)
        part = part_of.get(cid)
        tag = f"{ROMAN[part]} · {cid}" if part in ROMAN else cid
        ax_b.text(1.4e4, top - 0.5 * count, tag, fontsize=7, va="center", ha="left", clip_on=False)
        start += count
    handles, names = ax.get_legend_handles_labels()
    h_b, n_b = ax_b.get_legend_handles_labels()
    fig.legend(
        handles + h_b, names + n_b, loc="outside upper center", ncol=3, fontsize=7, frameon=False
    )
    if title:
        fig.suptitle(title, fontsize=9)
    if isinstance(path, (str, Path)):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
    with plt.rc_context({"svg.hashsalt": "lmbook"}):  # the same records give the same file
        fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)
    return path
