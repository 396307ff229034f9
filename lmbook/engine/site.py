"""The book build: stage the sources with the executed notebooks, write the generated pages, and let
Jupyter Book 1 (Sphinx, warnings as errors, no execution) render `_build/html`.

The staging folder `_build/site-src` mirrors `_config.yml`, `_toc.yml` and `book/`. Each chapter is
staged as a notebook that joins the chapter's current text (its prose may have changed since it ran)
with the outputs of its last execution, and ends with the claims table of that run, the full-scale
panel from `book/verified/`, and download links (.ipynb, .md). MathJax is served from the copy that
the `django-static-mathjax` package ships, so the site renders offline. Files are written only when
their content changed, so Sphinx re-renders only what changed.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from ..records import versions
from .chapters import PARTS, ROMAN, discover
from .directions import directions_markdown
from .ledger import claims_table_block, load_records, notes_markdown
from .provenance import VERIFIED_DIR, load_verified, panel_markdown
from .runner import ChapterResult, default_out, run_chapters, summary
from .sweep import SWEEP_FILE

LEDGER_MARKER = "<!-- lmbook:ledger -->"
DIRECTIONS_MARKER = "<!-- lmbook:open-directions -->"
STATUS_MARKER = "<!-- lmbook:status -->"


def _sync(text_or_bytes, dest: Path) -> None:
    data = text_or_bytes.encode() if isinstance(text_or_bytes, str) else text_or_bytes
    if dest.exists() and dest.read_bytes() == data:
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)


def ledger_markdown(run_dir: Path, chapters) -> str:
    """The generated part of the claims ledger page.

    A count, then one table per part and chapter.
    """
    records = load_records(run_dir) if Path(run_dir).is_dir() else []
    passed = sum(bool(r["passed"]) for r in records)
    profiles = sorted({r["profile"] for r in records})
    devices = sorted({r["device"] for r in records})
    lines = [
        f"**{passed} of {len(records)} claims passed** "
        f"across {len({r['chapter'] for r in records})} chapters "
        f"(profile {', '.join(profiles) or '-'}; device {', '.join(devices) or '-'}).",
        "",
        pull_figure_markdown("pulls/all.svg", "fig-pulls-all", "every claim of the book"),
        "",
    ]
    for part, name in PARTS.items():
        in_part = [c for c in chapters if c.part == part]
        if not in_part:
            continue
        lines += [f"## Part {ROMAN[part]}: {name}", ""]
        for c in in_part:
            recs = [r for r in records if r["chapter"] == c.id]
            lines += [f"### {{doc}}`{c.title} <../notebooks/{c.path.stem}>`", ""]
            if not recs:
                lines += ["_No claim records in this run._", ""]
                continue
            first = recs[0]
            lines += [
                f"{sum(bool(r['passed']) for r in recs)}/{len(recs)} passed · "
                f"profile `{first['profile']}` · device {first['device']} · seed {first['seed']} · "
                f"torch {first['versions'].get('torch')}",
                "",
                claims_table_block(recs, f"Claims of {c.title}"),
                "",
                notes_markdown(recs),
                "",
            ]
    return "\n".join(lines)


PULL_CAPTION = (
    "Pull plot of {what}, grouped by part and chapter. Left, the agrees claims: circles are "
    "the measured pull (measured − predicted)/allowed, error bars its standard error in the "
    "same units; the shaded band [−1, 1] is where a claim passes; crosses mark the rival's "
    "prediction in the same units (linear inside ±1, logarithmic outside). Right, the breaks "
    "claims: squares are the miss in bands, which must exceed 1 (the shaded region is where the "
    "theory would still hold). Open blue markers passed, orange failed."
)


def pull_figure_markdown(path: str, name: str, what: str) -> str:
    """A MyST figure directive for a pull plot written by `write_pull_plots`."""
    return "\n".join(
        [
            f"```{{figure}} {path}",
            f":name: {name}",
            f":alt: Pull plot of {what}: each claim's measured pull with its error bar against the "
            "pass band, rivals as crosses, breaks claims in a right-hand panel",
            ":width: 100%",
            "",
            PULL_CAPTION.format(what=what),
            "```",
        ]
    )


def write_pull_plots(src: Path, run_dir: Path, chapters) -> None:
    """The ledger page's pull plot (book/pulls/all.svg) and one per chapter (notebooks/pulls/)."""
    import io

    from .pullplot import pull_figure

    records = load_records(run_dir) if (Path(run_dir) / "claims").is_dir() else []
    jobs = [(records, src / "book" / "pulls" / "all.svg")]
    jobs += [
        ([r for r in records if r["chapter"] == c.id], src / "notebooks" / "pulls" / f"{c.id}.svg")
        for c in chapters
    ]
    for recs, dest in jobs:
        buf = io.BytesIO()
        pull_figure(recs, buf, chapters)
        _sync(buf.getvalue(), dest)


def _runs(run_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((Path(run_dir) / "runs").glob("*.json"))]


def _versions() -> dict:
    return versions(
        (
            "lmbook",
            "torch",
            "numpy",
            "sympy",
            "scipy",
            "jupyter-book",
            "sphinx",
            "papermill",
            "jupytext",
        )
    )


def _hardware() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"CPU": f"{cpu} ({os.cpu_count()} cores)", "GPU": gpu, "OS": platform.platform()}


def status_markdown(
    run_dir: Path, chapters, verified: dict, executed: list[str], sweep_file: Path | None = None
) -> str:
    """The generated part of the status page.

    Versions, hardware, per-chapter run times, full-scale records.
    """
    lines = [
        f"Built {datetime.now(timezone.utc).isoformat(timespec='seconds')} "
        f"from the run in `{run_dir.name}`.",
        "",
        "| software | version |",
        "|---|---|",
    ]
    lines += [
        f"| {'Python' if k == 'python' else k} | {v or '-'} |" for k, v in _versions().items()
    ]
    lines += ["", "| hardware of this build | |", "|---|---|"] + [
        f"| {k} | {v} |" for k, v in _hardware().items()
    ]
    runs = {r["chapter"]: r for r in _runs(run_dir)}
    lines += [
        "",
        "## Chapters",
        "",
        "| chapter | part | profile | device | claims | wall time | this build |",
        "|---|---|---|---|---|---|---|",
    ]
    total = 0.0
    for c in chapters:
        r = runs.get(c.id)
        if r is None:
            lines.append(f"| {c.id} | {ROMAN[c.part]} | - | - | - | - | not run |")
            continue
        total += r["wall_seconds"]
        lines.append(
            f"| {{doc}}`{c.id} <../notebooks/{c.path.stem}>` | {ROMAN[c.part]} | "
            f"{r['profile']} | {r['device']} | "
            f"{r['claims_passed']}/{r['claims_total']} | {r['wall_seconds']:.1f} s | "
            f"{'executed' if c.id in executed else 'reused (unchanged code)'} |"
        )
    lines += [f"| **total** | | | | | **{total:.1f} s** | |", "", "## Verified at full scale", ""]
    if verified:
        lines += [
            "| chapter | device | date | claims | wall time | torch |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {e['chapter']} | {e['device']} | {e['date'][:10]} | "
            f"{e['claims_passed']}/{e['claims_total']} | "
            f"{e['wall_seconds']:.0f} s | {e.get('versions', {}).get('torch')} |"
            for e in verified.values()
        ]
    else:
        lines.append("No full-scale records are committed yet (`book/verified/` is empty).")
    return "\n".join(lines + ["", "## Calibration", "", sweep_markdown(sweep_file or Path("-"))])


def sweep_markdown(path: Path) -> str:
    """The latest committed `lmbook sweep --record` report.

    Seeds, date, and each claim's calibration.
    """
    if not path.is_file():
        return "No calibration sweep is committed yet (`lmbook sweep --seeds 100-119 --record`)."
    report = json.loads(path.read_text())
    seeds = report["seeds"]
    lines = [
        f"The latest committed sweep ran seeds {seeds[0]}-{seeds[-1]} ({len(seeds)} seeds, profile "
        f"`{report['profile']}`) on {report['date'][:10]}: "
        + (
            "every chapter and claim is calibrated."
            if report["ok"]
            else "**some claims are flagged**."
        )
        + " The margin is miss/allowed (agrees) or allowed/miss (breaks); a claim passes below 1, "
        f"and a median above {report['median_limit']} marks it mis-specified.",
        "",
        "| chapter | seeds passed | mean wall time |",
        "|---|---|---|",
    ]
    for cid, ch in report["chapters"].items():
        n = len(ch["seeds_passed"]) + len(ch["seeds_failed"])
        wall = sum(ch["wall_seconds"]) / max(1, len(ch["wall_seconds"]))
        lines.append(f"| {cid} | {len(ch['seeds_passed'])}/{n} | {wall:.1f} s |")
    lines += [
        "",
        "| claim | kind | pass rate | median margin | 90th pct | max | min discrimination |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in report["claims"]:
        disc = "-" if c["min_discrimination"] is None else f"{c['min_discrimination']:.3g}"
        lines.append(
            f"| {c['chapter']}/`{c['claim']}` | {c['kind']} | {c['pass_rate']:.0%} | "
            f"{c['median']:.2f} | {c['p90']:.2f} | {c['max']:.2f} | {disc} |"
        )
    return "\n".join(lines)


def chapter_tail(chapter, run_dir: Path, verified: dict) -> str:
    """The markdown cell that ends a chapter page: its claims, the full-scale panel, downloads."""
    records = (
        [r for r in load_records(run_dir) if r["chapter"] == chapter.id]
        if (Path(run_dir) / "claims").is_dir()
        else []
    )
    passed = sum(bool(r["passed"]) for r in records)
    profile = records[0]["profile"] if records else "-"
    device = records[0]["device"] if records else "-"
    table = claims_table_block(records, "Claims of this run") if records else "_No claim records._"
    return "\n".join(
        [
            "## Claims of this run",
            "",
            f"{passed} of {len(records)} claims passed (profile `{profile}`, device {device}); "
            "see {doc}`how to read a claim <../book/claim-standard>`, its "
            "{ref}`glossary <claim-glossary>`, and the "
            "{doc}`claims ledger <../book/claims>` for every chapter. Each claim's verdict is also "
            "printed where the chapter makes it.",
            "",
            table,
            "",
            pull_figure_markdown(
                f"pulls/{chapter.id}.svg", f"fig-pulls-{chapter.id}", "this chapter's claims"
            )
            if records
            else "",
            "",
            notes_markdown(records),
            "",
            panel_markdown(verified.get(chapter.id), chapter.id),
            "",
            "Download this chapter: "
            f"{{download}}`executed notebook (.ipynb) <{chapter.path.stem}.ipynb>` · "
            f"{{download}}`MyST source (.md) <sources/{chapter.path.stem}.md>`",
        ]
    )


def colab_cell(repository: str):
    """The first cell of a staged chapter: installs lmbook from the repository where it is missing
    (a Colab launch). Tagged remove-cell, so the website does not show it."""
    import nbformat

    cell = nbformat.v4.new_code_cell(
        "# Colab and other fresh kernels: install lmbook and its dependencies when missing\n"
        "import importlib.util\n"
        "\n"
        'if importlib.util.find_spec("lmbook") is None:\n'
        f'    %pip install --quiet "lmbook @ git+{repository}"'
    )
    cell.metadata["tags"] = ["remove-cell"]
    return cell


def merged_notebook(chapter, executed: Path, tail: str, repository: str | None = None):
    """The chapter's current text with the outputs of its execution, plus `tail` as a last
    markdown cell.

    Code cells are taken, in order, from the executed notebook (the cache key guarantees the same
    code); markdown cells from the source, so prose edits show without re-execution.
    """
    import jupytext
    import nbformat

    src = jupytext.read(chapter.path)
    exe = nbformat.read(executed, as_version=4)
    # papermill's injected-parameters cell holds the run folder, an absolute path of the machine
    # that ran the chapter: it is not shown (the parameters cell above it says what can be set).
    exe_code = [
        c
        for c in exe.cells
        if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])
    ]
    src_code = [c for c in src.cells if c.cell_type == "code"]
    if [c.source for c in src_code] != [c.source for c in exe_code]:
        # the code changed since it ran: show the run as it was
        cells = [c for c in exe.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    else:
        cells, outputs = [], iter(exe_code)
        for c in src.cells:
            if c.cell_type == "code":
                cell = next(outputs)
                # the source's metadata (figure captions, alt text, tags such as hide-input) is
                # current even when the outputs are reused
                cell.metadata = nbformat.from_dict(dict(c.metadata))
                cells.append(cell)
            else:
                cells.append(c)
    exe.cells = (
        ([colab_cell(repository)] if repository else [])
        + cells
        + [nbformat.v4.new_markdown_cell(tail)]
    )
    for i, cell in enumerate(exe.cells):
        cell["id"] = f"cell-{i}"
    return nbformat.writes(exe)


def _mathjax_dir() -> Path | None:
    try:
        import mathjax  # the django-static-mathjax package: MathJax 3 as static files
    except ImportError:
        return None
    es5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    return es5 if (es5 / "tex-chtml.js").exists() else None


def stage(root: Path, run_dir: Path, executed: list[str] | None = None) -> Path:
    """Write the staging folder for `run_dir`'s executed notebooks; return its path."""
    chapters = discover(root)
    verified = load_verified(root / VERIFIED_DIR)
    src = root / "_build" / "site-src"
    for name in ("_config.yml", "_toc.yml"):
        _sync((root / name).read_bytes(), src / name)
    for f in (root / "book").rglob("*"):
        if f.is_file():
            data = f.read_text() if f.suffix == ".md" else f.read_bytes()
            if f.name == "open-directions.md":
                data = data.replace(DIRECTIONS_MARKER, directions_markdown(chapters))
            if f.name == "claims.md":
                data = data.replace(LEDGER_MARKER, ledger_markdown(run_dir, chapters))
            if f.name == "status.md":
                data = data.replace(
                    STATUS_MARKER,
                    status_markdown(run_dir, chapters, verified, executed or [], root / SWEEP_FILE),
                )
            _sync(data, src / f.relative_to(root))
    write_pull_plots(src, run_dir, chapters)
    config = yaml.safe_load((root / "_config.yml").read_text()) or {}
    repository = (config.get("repository") or {}).get("url")
    keep = set()
    for c in chapters:
        executed_nb = run_dir / "notebooks" / f"{c.path.stem}.ipynb"
        _sync(
            merged_notebook(c, executed_nb, chapter_tail(c, run_dir, verified), repository),
            src / "notebooks" / executed_nb.name,
        )
        _sync(c.path.read_bytes(), src / "notebooks" / "sources" / c.path.name)
        keep |= {executed_nb.name, c.path.name}
    for stale in list((src / "notebooks").glob("*.ipynb")) + list(
        (src / "notebooks" / "sources").glob("*.md")
    ):
        if stale.name not in keep:
            stale.unlink()
    _sync(
        (Path(__file__).parents[1] / "assets" / "lmbook.css").read_bytes(),
        src / "_lmbook_static" / "lmbook.css",
    )
    mathjax = _mathjax_dir()
    if mathjax is None:
        raise RuntimeError(
            "MathJax is missing: `pip install django-static-mathjax` (a dependency of lmbook) "
            "provides the copy the site serves offline"
        )
    target = (
        src / "_mathjax" / "mathjax"
    )  # not _static: Jupyter Book links every .js file found there
    n_files = sum(1 for f in mathjax.rglob("*") if f.is_file())
    if not target.is_dir() or sum(1 for f in target.rglob("*") if f.is_file()) != n_files:
        shutil.copytree(mathjax, target, dirs_exist_ok=True)
    return src


def build(root: Path, profile: str, jobs: int = 1, runs=None) -> int:
    """Execute what is not current for `profile`, then render the site. Returns an exit code.

    With `runs` (run folders made elsewhere, e.g. one per GPU job), nothing executes: the folders
    are merged (lmbook.engine.merge) into `_build/runs/merged` and the site is built from them.
    The site also serves the ledger as `claims.json`, for `lmbook claims diff`.
    """
    chapters = discover(root)
    t0 = time.perf_counter()
    if runs:
        from .merge import merge_runs

        run_dir = merge_runs(runs, root / "_build" / "runs" / "merged", chapters)
        results = [
            ChapterResult(
                r["chapter"],
                r["chapter"],
                r["status"],
                r["claims_passed"],
                r["claims_total"],
                r["wall_seconds"],
                r.get("message", ""),
            )
            for r in _runs(run_dir)
        ]
        if {r["profile"] for r in _runs(run_dir)} - {profile}:
            print(f"note: the merged runs are not at the {profile!r} profile", file=sys.stderr)
    else:
        run_dir = default_out(root, profile)
        results = run_chapters(chapters, profile, "auto", 0, run_dir, jobs=jobs)
    t_exec = time.perf_counter() - t0
    print(summary(results))
    missing = [
        c.id for c in chapters if not (run_dir / "notebooks" / f"{c.path.stem}.ipynb").exists()
    ]
    if missing:
        print(f"cannot build: no executed notebook for {', '.join(missing)}", file=sys.stderr)
        return 1
    t1 = time.perf_counter()
    executed = [] if runs else [r.id for r in results if r.status != "cached"]
    src = stage(root, run_dir, executed=executed)
    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) or shutil.which(
        "jupyter-book"
    )
    cmd = [jb, "build", str(src), "--path-output", str(root), "--warningiserror", "--keep-going"]
    done = subprocess.run(cmd)
    t_render = time.perf_counter() - t1
    if done.returncode != 0:
        print(
            "the book build failed (Sphinx warnings count as errors); see the messages above",
            file=sys.stderr,
        )
        return 1
    html = root / "_build" / "html"
    _sync(json.dumps(load_records(run_dir), indent=1), html / "claims.json")
    print(
        f"site: {html / 'index.html'}  "
        f"({len(executed)} chapters executed in {t_exec:.1f} s, rendered in {t_render:.1f} s); "
        f"ledger: {html / 'claims.json'}"
    )
    return 0 if all(r.ok for r in results) else 1
