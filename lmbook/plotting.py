"""One house style: theory as lines, measurement as markers with error bars.

Figures are read at the page's width (about 700 px on a desktop, 400 px on a phone), so the style
uses an 11-point font, 9-point legends and markers of 6 points drawn above the lines; panels of a
multi-panel figure are stacked one above the other, each at full width, rather than side by side.
Every figure cell carries a MyST-NB caption (what is theory, what is measured, what the error bars
are) and alt text: see CONTRIBUTING.md."""

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
            "font.size": 11,
            "legend.fontsize": 9,
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
    kw.setdefault("markersize", 6)
    kw.setdefault("zorder", 3)  # markers above the theory lines and any rival
    return ax.errorbar(x, y, yerr=yerr, fmt="o", mfc="white", color=color, label=label, **kw)


def log_ticks(ax, x=None, y=None) -> None:
    """Readable ticks on log axes spanning less than a few decades: major ticks at the given values
    (labelled with :g), and no labels on the minor ticks (which otherwise overlap). Pass x or y as a
    list of values; an axis passed as True only loses its minor labels."""
    from matplotlib.ticker import FixedLocator, NullFormatter

    for axis, values in ((ax.xaxis, x), (ax.yaxis, y)):
        if values is None:
            continue
        axis.set_minor_formatter(NullFormatter())
        if values is not True:
            values = [float(v) for v in values]
            axis.set_major_locator(FixedLocator(values))
            axis.set_major_formatter(mpl.ticker.FixedFormatter([f"{v:g}" for v in values]))


def figure(ncols=1, width=6.4, height=4.0):
    """A figure with `ncols` panels of `width` x `height` inches. Several panels are stacked
    vertically (one column), so that each keeps the page's full width and readable labels; the
    axes come back as a flat array in panel order either way."""
    use_style()
    fig, axes = plt.subplots(
        ncols, 1, figsize=(width, height * ncols), constrained_layout=True, squeeze=True
    )
    return fig, axes
