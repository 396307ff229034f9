"""Merge run folders made apart (one per GPU job, say) into one, for `lmbook build --runs`.

Each source is a run folder as `lmbook run --out DIR` writes it (notebooks/, claims/, runs/). The
merge copies every chapter's executed notebook, claim records, run file and kernel log into `out`.
A chapter may come from one source only, every chapter it names must have finished (a run file),
and all of them must share one profile; anything else is a UsageError naming the folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import UsageError
from .chapters import Chapter


def _finished(run_dir: Path) -> dict[str, dict]:
    runs = run_dir / "runs"
    if not runs.is_dir():
        raise UsageError(
            f"{run_dir} is not a run folder (no runs/); pass folders written by "
            "`lmbook run --out DIR`"
        )
    return {p.stem: json.loads(p.read_text()) for p in sorted(runs.glob("*.json"))}


def merge_runs(sources, out: Path, chapters: list[Chapter]) -> Path:
    """Copy the chapters' runs from `sources` into `out` (emptied first); return `out`."""
    sources = [Path(s).resolve() for s in sources]
    if not sources:
        raise UsageError("--runs needs at least one run folder")
    by_id = {c.id: c for c in chapters}
    owner: dict[str, Path] = {}
    profiles = set()
    for src in sources:
        if not src.is_dir():
            raise UsageError(f"no run folder at {src}")
        for cid, info in _finished(src).items():
            if cid not in by_id:
                raise UsageError(f"{src} holds a run of {cid!r}, which is not a chapter here")
            if cid in owner:
                raise UsageError(
                    f"chapter {cid!r} was run in both {owner[cid]} and {src}; pass each once"
                )
            owner[cid] = src
            profiles.add(info.get("profile"))
    if len(profiles) > 1:
        raise UsageError(f"the run folders mix profiles {sorted(map(str, profiles))}; merge one")
    out = Path(out).resolve()
    if out in sources:
        raise UsageError(f"the merged folder {out} cannot also be a source")
    shutil.rmtree(out, ignore_errors=True)
    for cid, src in owner.items():
        stem = by_id[cid].path.stem
        notebook = src / "notebooks" / f"{stem}.ipynb"
        if not notebook.is_file():
            raise UsageError(f"{src} has a run file for {cid!r} but no notebook {notebook.name}")
        for rel in (
            Path("notebooks") / notebook.name,
            Path("runs") / f"{cid}.json",
            Path("runs") / f"{cid}.kernel.log",
        ):
            if (src / rel).is_file():
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src / rel, out / rel)
        if (src / "claims" / cid).is_dir():
            shutil.copytree(src / "claims" / cid, out / "claims" / cid)
    return out
