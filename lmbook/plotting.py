"""One house style: theory as lines, measurement as markers with error bars."""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt

PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]


def use_style() -> None:
    """Apply the book's matplotlib style (colour-blind-safe palette, light grid, no top/right
    spines)."""
    mpl.rcParams.update(
        {
            "figure.figsize": (6.4, 4.0),
            "figure.dpi": 110,
            "savefig.dpi": 150,
            "axes.prop_cycle": mpl.cycler(color=PALETTE),
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.25,
            "font.size": 10,
            "legend.frameon": False,
            "lines.linewidth": 1.8,
            "errorbar.capsize": 2,
        }
    )


def theory(ax, x, y, label=None, color=None, **kw):
    """A theory curve: a solid line."""
    return ax.plot(x, y, "-", color=color, label=label, **kw)


def measured(ax, x, y, yerr=None, label=None, color=None, **kw):
    """Measurements: open markers with error bars (one standard deviation or SE, say which in the
    caption)."""
    kw.setdefault("markersize", 5)
    return ax.errorbar(x, y, yerr=yerr, fmt="o", mfc="white", color=color, label=label, **kw)


def figure(ncols=1, width=6.4, height=4.0):
    use_style()
    fig, axes = plt.subplots(
        1, ncols, figsize=(width * ncols if ncols > 1 else width, height), constrained_layout=True
    )
    return fig, axes
