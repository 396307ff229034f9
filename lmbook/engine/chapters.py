"""Chapters: MyST-markdown notebooks in `notebooks/`, each with front matter
`lmbook: {id: ..., part: 1..5, open_directions: [...]}` and its title as the first `# ` heading."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import yaml

from ..errors import UsageError

PARTS = {
    1: "Solvable idealised settings",
    2: "Tractable limits",
    3: "Simple laws for macroscopic observables",
    4: "Theories of hyperparameters",
    5: "Universal behaviours",
}
ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V"}


@dataclasses.dataclass(frozen=True)
class Chapter:
    id: str
    part: int
    title: str
    path: Path
    open_directions: tuple = ()  # numbers of lmbook.engine.directions.DIRECTIONS

    def as_dict(self, root: Path) -> dict:
        return {
            "id": self.id,
            "part": self.part,
            "title": self.title,
            "path": str(self.path.relative_to(root)),
            "open_directions": list(self.open_directions),
        }


def repo_root() -> Path:
    """The project root: $LMBOOK_ROOT, else the checkout lmbook is installed from, else the cwd."""
    if os.environ.get("LMBOOK_ROOT"):
        return Path(os.environ["LMBOOK_ROOT"]).resolve()
    here = Path(__file__).resolve().parents[2]
    return here if (here / "notebooks").is_dir() else Path.cwd()


def read_chapter(path: Path) -> Chapter:
    text = path.read_text()
    m = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    meta = (yaml.safe_load(m.group(1)) if m else None) or {}
    info = meta.get("lmbook") or {}
    if "id" not in info or "part" not in info:
        raise UsageError(f"{path}: front matter needs `lmbook: {{id: ..., part: 1-5}}`")
    if info["part"] not in PARTS:
        raise UsageError(f"{path}: part must be one of {sorted(PARTS)}, got {info['part']!r}")
    title = re.search(r"^# (.+)$", text[m.end() if m else 0 :], re.M)
    if not title:
        raise UsageError(f"{path}: a chapter needs a title line starting with '# '")
    from .directions import DIRECTIONS

    directions = info.get("open_directions") or []
    if not isinstance(directions, list) or any(d not in DIRECTIONS for d in directions):
        raise UsageError(
            f"{path}: open_directions must be a list of numbers from {sorted(DIRECTIONS)} "
            f"(see book/open-directions.md), got {directions!r}"
        )
    return Chapter(
        id=str(info["id"]),
        part=int(info["part"]),
        title=title.group(1).strip(),
        path=path.resolve(),
        open_directions=tuple(directions),
    )


def discover(root: Path | None = None) -> list[Chapter]:
    """All chapters under root/notebooks, ordered by file name."""
    root = root or repo_root()
    if not (root / "notebooks").is_dir():
        raise UsageError(
            f"no notebooks/ folder under {root}; run from the project checkout or pass --root DIR"
        )
    chapters = [read_chapter(p) for p in sorted((root / "notebooks").glob("*.md"))]
    seen = {}
    for c in chapters:
        if c.id in seen:
            raise UsageError(f"chapter id {c.id!r} is used by both {seen[c.id]} and {c.path}")
        seen[c.id] = c.path
    return chapters


def select(chapters: list[Chapter], names: list[str]) -> list[Chapter]:
    """Chapters named by id or file stem; all when `names` is empty.

    Unknown names are a UsageError.
    """
    if not names:
        return chapters
    by_name = {c.id: c for c in chapters} | {c.path.stem: c for c in chapters}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        valid = ", ".join(c.id for c in chapters) or "(none found)"
        raise UsageError(
            f"unknown chapter {', '.join(map(repr, unknown))}; valid chapters: {valid}"
        )
    picked = []
    for n in names:
        if by_name[n] not in picked:
            picked.append(by_name[n])
    return picked
