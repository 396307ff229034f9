"""The book build: stage the sources with the executed notebooks, write the generated pages, and let
Jupyter Book 1 (Sphinx, warnings as errors, no execution) render `_build/html`.

Staging folder `_build/site-src` mirrors `_config.yml`, `_toc.yml` and `book/`, and holds each chapter
as its executed `.ipynb` (the `_toc.yml` entries name chapters without a suffix). Files are written only
when their content changed, so Sphinx re-renders only what changed.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from .chapters import PARTS, discover
from .ledger import load_records, markdown_table
from .runner import default_out, run_chapters, summary

ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V"}
LEDGER_MARKER = "<!-- lmbook:ledger -->"


def _sync(text_or_bytes, dest: Path) -> None:
    data = text_or_bytes.encode() if isinstance(text_or_bytes, str) else text_or_bytes
    if dest.exists() and dest.read_bytes() == data:
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)


def ledger_markdown(run_dir: Path, chapters) -> str:
    """The generated part of the claims ledger page: a count, then one table per part and chapter."""
    records = load_records(run_dir) if Path(run_dir).is_dir() else []
    passed = sum(bool(r["passed"]) for r in records)
    profiles = sorted({r["profile"] for r in records})
    devices = sorted({r["device"] for r in records})
    lines = [f"**{passed} of {len(records)} claims passed** across {len({r['chapter'] for r in records})} chapters "
             f"(profile {', '.join(profiles) or '-'}; device {', '.join(devices) or '-'}).", ""]
    runs = [json.loads(p.read_text()) for p in sorted((Path(run_dir) / "runs").glob("*.json"))]
    if runs:
        lines += ["| chapter | status | claims | wall time | finished (UTC) |", "|---|---|---|---|---|"]
        lines += [f"| {r['chapter']} | {r['status']} | {r['claims_passed']}/{r['claims_total']} | "
                  f"{r['wall_seconds']:.1f} s | {r['finished']} |" for r in runs]
        lines += [f"| total | | | {sum(r['wall_seconds'] for r in runs):.1f} s | |", ""]
    for part, name in PARTS.items():
        in_part = [c for c in chapters if c.part == part]
        if not in_part:
            continue
        lines += [f"## Part {ROMAN[part]}: {name}", ""]
        for c in in_part:
            recs = [r for r in records if r["chapter"] == c.id]
            lines += [f"### {{doc}}`{c.title} <../notebooks/{c.path.stem}>`", ""]
            lines += [markdown_table(recs, show_chapter=False) if recs else "_No claim records in this run._", ""]
    return "\n".join(lines)


def stage(root: Path, run_dir: Path) -> Path:
    """Write the staging folder for `run_dir`'s executed notebooks; return its path."""
    chapters = discover(root)
    src = root / "_build" / "site-src"
    for name in ("_config.yml", "_toc.yml"):
        _sync((root / name).read_bytes(), src / name)
    for f in (root / "book").rglob("*"):
        if f.is_file():
            data = f.read_text() if f.suffix == ".md" else f.read_bytes()
            if f.name == "claims.md":
                data = data.replace(LEDGER_MARKER, ledger_markdown(run_dir, chapters))
            _sync(data, src / f.relative_to(root))
    for c in chapters:
        executed = run_dir / "notebooks" / f"{c.path.stem}.ipynb"
        _sync(executed.read_bytes(), src / "notebooks" / executed.name)
    keep = {f"{c.path.stem}.ipynb" for c in chapters}
    for stale in (src / "notebooks").glob("*.ipynb"):
        if stale.name not in keep:
            stale.unlink()
    return src


def build(root: Path, profile: str, jobs: int = 1) -> int:
    """Execute what is not current for `profile`, then render the site. Returns an exit code."""
    chapters = discover(root)
    run_dir = default_out(root, profile)
    results = run_chapters(chapters, profile, "auto", 0, run_dir, jobs=jobs)
    print(summary(results))
    missing = [c.id for c in chapters if not (run_dir / "notebooks" / f"{c.path.stem}.ipynb").exists()]
    if missing:
        print(f"cannot build: no executed notebook for {', '.join(missing)}", file=sys.stderr)
        return 1
    src = stage(root, run_dir)
    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) or shutil.which("jupyter-book")
    cmd = [jb, "build", str(src), "--path-output", str(root), "--warningiserror", "--keep-going"]
    done = subprocess.run(cmd)
    if done.returncode != 0:
        print("the book build failed (Sphinx warnings count as errors); see the messages above", file=sys.stderr)
        return 1
    print(f"site: {root / '_build' / 'html' / 'index.html'}")
    return 0 if all(r.ok for r in results) else 1
