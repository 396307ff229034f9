"""`lmbook new ID --part N --title "..."`: a chapter skeleton that already meets the contract.

It writes `notebooks/<NN><letter>_<id>.md` (ordered after the part's chapters) with the front
matter, the parameters cell, the prologue, the sections in order and one placeholder claim that
fails until it is replaced, and lists the chapter in `_toc.yml`, on its part page and in the
README's chapter table (where those files exist), so the consistency tests hold from the start.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import UsageError
from .chapters import PARTS, ROMAN, discover

ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")

TEMPLATE = '''---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
    format_version: 0.13
kernelspec:
  display_name: Python 3
  language: python
  name: python3
lmbook:
  id: {id}
  part: {part}
  open_directions: []
---

# {title}

**Claim.** One or two sentences with the numbers the chapter predicts and measures, and where the
theory stops holding. Cite the papers ({{footcite}}`simon2026theory`; add yours to
book/references.bib with their arXiv links).

```{{code-cell}} ipython3
:tags: [parameters]

profile = "ci"
device = "auto"
seed = 0
results_dir = ""
```

```{{code-cell}} ipython3
import matplotlib.pyplot as plt
import numpy as np
import sympy as sp

import lmbook
from lmbook import Rival, Tol, plotting

sp.init_printing()
dev, gen, claims = lmbook.start(profile, device, seed, results_dir)
size = lmbook.sizes(profile, ci=dict(replicates=32), full=dict(replicates=256))
```

## The setting

The model, the data and the training rule, with their conventions (parameterisation,
normalisation, units).

| symbol | meaning |
|---|---|
| $n$ | width |

## Derivation

SymPy derives the prediction; the compared number is evaluated from its result, never retyped.

```{{code-cell}} ipython3
n = sp.Symbol("n", positive=True)
prediction = sp.Integer(1)  # replace with the derived quantity
prediction
```

## Experiment

Train or sample `size.replicates` independent replicates (a batched ensemble, on `dev`), and keep
one measured value per replicate.

```{{code-cell}} ipython3
measured = np.zeros(size.replicates)  # replace with one measurement per replicate
```

## Comparison

```{{code-cell}} ipython3
---
mystnb:
  figure:
    caption: |
      What the figure shows. Lines: the theory (SymPy); markers: the measurement, mean over the
      replicates, error bars one standard error.
    name: fig-{id}-comparison
  image:
    alt: describe the axes and what lies on what
---
fig, ax = plotting.figure()
plotting.theory(ax, [0, 1], [float(prediction)] * 2, label="theory")
plotting.measured(ax, [0.5], [measured.mean()], yerr=[measured.std() / len(measured) ** 0.5],
                  label="measured")
ax.legend()
plt.show()
```

## Claims

Each claim compares the SymPy prediction with per-replicate measurements; `lmbook` computes the
statistical band, the systematic budget is a sum of named, derived terms, and the rival is the
strongest competing prediction in use ({{doc}}`how to read a claim <../book/claim-standard>`).

```{{code-cell}} ipython3
claims.agrees(
    "placeholder",
    "REPLACE ME: this placeholder fails until the chapter states its first claim",
    predicted=float(prediction),
    measured=measured,
)
```

## Where the theory breaks

Leave one assumption of the theory and show, with `claims.breaks`, that the prediction misses by
more than its band, in the direction and by about the amount that the chapter explains.

## Open questions

What this chapter leaves open, and which of the field's {{doc}}`open directions
<../book/open-directions>` it touches (list their numbers in the front matter's
`open_directions`).

## References

```{{footbibliography}}
```
'''


def _file_name(root: Path, part: int, cid: str) -> str:
    stems = sorted(p.stem for p in (root / "notebooks").glob(f"{part:02d}*.md"))
    slug = cid.replace("-", "_").replace(".", "_")
    if not stems:
        return f"{part:02d}_{slug}.md"
    used = {s[2] for s in stems if len(s) > 2 and s[2].isalpha()}
    last = max(used or {"a"})
    letter = next((c for c in "bcdefghijklmnopqrstuvwxyz" if c > last), None)
    if letter is None:
        raise UsageError(f"part {part} has no free file-name letter left; name the file by hand")
    return f"{part:02d}{letter}_{slug}.md"


def _add_to_toc(toc: Path, part: int, stem: str) -> None:
    lines = toc.read_text().splitlines(keepends=True)
    caption = f'  - caption: "Part {ROMAN[part]}: {PARTS[part]}"'
    starts = [i for i, line in enumerate(lines) if line.rstrip() == caption]
    if not starts:
        raise UsageError(f"{toc} has no part with the caption {caption.strip()[2:]}")
    end = starts[0] + 1
    while end < len(lines) and not lines[end].startswith("  - caption"):
        end += 1
    while lines[end - 1].strip() == "":
        end -= 1
    lines.insert(end, f"      - file: notebooks/{stem}\n")
    toc.write_text("".join(lines))


def _add_to_part_page(page: Path, stem: str, title: str) -> None:
    text = page.read_text().rstrip("\n")
    page.write_text(
        text + f"\n\n- {{doc}}`../../notebooks/{stem}`: {title} (a summary of its claims).\n"
    )


def _add_to_readme(readme: Path, part: int, cid: str, title: str) -> None:
    lines = readme.read_text().splitlines(keepends=True)
    rows = [i for i, line in enumerate(lines) if re.match(rf"^\| {ROMAN[part]} \| ", line)]
    if not rows:
        return
    lines.insert(rows[-1] + 1, f"| {ROMAN[part]} | {title} (`{cid}`) | - | not measured | - |\n")
    readme.write_text("".join(lines))


def new_chapter(root: Path, cid: str, part: int, title: str) -> Path:
    """Write the skeleton and list it; return its path. Bad input is a UsageError."""
    if not ID_PATTERN.match(cid or ""):
        raise UsageError(
            f"chapter id {cid!r}: use lower-case letters, digits, '-', '_' or '.', "
            "starting with a letter or digit (e.g. signal-propagation)"
        )
    if part not in PARTS:
        raise UsageError(f"--part must be one of {sorted(PARTS)}, got {part}")
    title = (title or "").strip()
    if not title or "\n" in title:
        raise UsageError('--title must be one line of text, e.g. --title "The edge of chaos"')
    if any(c.id == cid for c in discover(root)):
        raise UsageError(f"a chapter with id {cid!r} exists already; choose another id")
    path = root / "notebooks" / _file_name(root, part, cid)
    toc = root / "_toc.yml"
    if toc.is_file():
        _add_to_toc(toc, part, path.stem)  # first: it is the step that can refuse
    path.write_text(TEMPLATE.format(id=cid, part=part, title=title))
    page = root / "book" / "parts" / f"part{part}.md"
    if page.is_file():
        _add_to_part_page(page, path.stem, title)
    if (root / "README.md").is_file():
        _add_to_readme(root / "README.md", part, cid, title)
    return path
