"""The field's open directions (Simon, Kunin, Atanasov et al. 2026, "open directions"; the companion
site learningmechanics.pub) and the chapters that touch them.

A chapter names the directions it touches in its front matter, `lmbook: {open_directions: [1, 5]}`;
the page `book/open-directions.md` is generated from those lists, so it stays current as chapters
are added, and each chapter's "Open questions" section links back to it.
"""

from __future__ import annotations

DIRECTIONS = {
    1: (
        "Solvable models of deep, nonlinear learning",
        "Deep linear networks have nonlinear parameter dynamics but learn only linear maps; "
        "kernels learn nonlinear functions but have linear dynamics. Wanted: a reasonably general "
        "solvable class that has both.",
    ),
    2: (
        "A theory that takes natural data as input",
        "Networks exploit structure in real data, so a theory must represent that structure: what "
        "the structure is, and how to find it, is open.",
    ),
    3: (
        "Implicit minimisation of functional complexity",
        "A simplicity bias is widely believed in but pinned down only in special cases: do "
        "networks broadly minimise a precise complexity measure among the low-loss functions?",
    ),
    4: (
        "Formal definitions of learned features",
        "First-principles meaning for the features, circuits and mechanisms of interpretability, "
        "and tests of its working assumptions (linear representability, locality, sparsity, "
        "compositionality).",
    ),
    5: (
        "The discretisation hypothesis",
        "Finite networks may be discretisations of a continuum system (width: a measure over "
        "neurons; depth: a neural ODE or SDE; small steps: a flow), with scale mostly reducing the "
        "discretisation error. Is this right, and what is the continuum object?",
    ),
    6: (
        "Eliminating hyperparameters",
        "muP removes the width by a joint limit, and central flows turn a finite learning rate "
        "into an implicit penalty. How far can this go: to none, or to an irreducible set? The "
        "implicit hyperparameters set tacitly to one (per-layer learning-rate ratios) must "
        "first be made explicit.",
    ),
    7: (
        "Predicting scaling-law exponents a priori",
        "Why power laws, and why these exponents? Power-law data or kernel spectra, Zipfian "
        "subtasks and superposition are candidate mechanisms; no framework yet predicts the "
        "exponents robustly in realistic settings.",
    ),
}


def directions_markdown(chapters) -> str:
    """One section per direction: what is open, and links to the chapters that touch it."""
    lines = []
    for number, (title, text) in DIRECTIONS.items():
        touching = [c for c in chapters if number in c.open_directions]
        lines += [f"({_label(number)})=", f"## {number}. {title}", "", text, ""]
        if touching:
            lines.append("Chapters that touch it:")
            lines.append("")
            lines += [f"- {{doc}}`../notebooks/{c.path.stem}`" for c in touching]
        else:
            lines.append("_No chapter of the book touches it yet._")
        lines.append("")
    return "\n".join(lines)


def _label(number: int) -> str:
    return f"open-direction-{number}"
