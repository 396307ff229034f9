"""The single execution path: jupytext reads a chapter, papermill injects the parameters
and runs it.

A run folder holds, per chapter:
  notebooks/<file stem>.ipynb   the executed notebook (outputs kept)
  claims/<chapter id>/<claim>.json   one record per claim (lmbook.claims)
  runs/<chapter id>.json   status, wall time, cache key
  runs/<chapter id>.kernel.log   what the kernel wrote to stderr
A chapter whose code cells, the lmbook modules its kernel imported, its parameters and the torch
version are unchanged since a passing run is not executed again: an edit of its prose only
re-renders (lmbook.engine.site merges the new prose with the stored outputs), an edit of the ledger
or the site executes nothing, and an edit of a science module executes only the chapters that
import it.
The runner injects `lmbook_chapter` (the front matter's id), which `lmbook.start` reads.
A run folder is locked while a run writes into it; a second run into it is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..profiles import check_profile, device_name, resolve_device
from ..records import write_atomic
from .chapters import Chapter
from .ledger import load_records
from .provenance import write_verified

MIN_CLAIMS = 3
MAX_CLAIMS = 20  # lmbook.stats.FAMILY: the Bonferroni divisor of the statistical bands
LIB_DIR = Path(__file__).resolve().parents[1]
CELL_TIMEOUT_S = 3600
# Appended to the notebook for the run and removed from the stored notebook: which lmbook modules
# the kernel imported (the cache key hashes exactly those files).
MODULES_CELL = """import json as _j, sys as _s
print("LMBOOK_MODULES=" + _j.dumps(sorted(
    m.__file__ for n, m in list(_s.modules.items())
    if (n == "lmbook" or n.startswith("lmbook.")) and getattr(m, "__file__", None))))"""


@dataclasses.dataclass
class ChapterResult:
    id: str
    title: str
    status: str  # passed | failed | error | cached
    claims_passed: int
    claims_total: int
    wall_seconds: float
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("passed", "cached")


def default_out(root: Path, profile: str) -> Path:
    return root / "_build" / "runs" / profile


def code_signature(chapter: Chapter) -> str:
    """The chapter's code cells (source and tags) as one string: what execution depends on.

    Prose edits leave it unchanged, so they re-render the site without re-executing the chapter.
    """
    import jupytext

    nb = jupytext.read(chapter.path)
    return json.dumps(
        [[c.source, c.metadata.get("tags", [])] for c in nb.cells if c.cell_type == "code"]
    )


def cache_key(chapter: Chapter, parameters: dict, modules: list[str]) -> str:
    """The hash of what a run depends on: code cells, the lmbook modules (paths relative to the
    package) that its kernel imported, the parameters, torch and the prediction scale."""
    h = hashlib.sha256()
    h.update(code_signature(chapter).encode())
    for rel in sorted(modules):
        src = LIB_DIR / rel
        h.update(rel.encode())
        h.update(src.read_bytes() if src.is_file() else b"<missing>")
    h.update(json.dumps(parameters, sort_keys=True).encode())
    h.update(torch.__version__.encode())
    h.update(os.environ.get("LMBOOK_PREDICTION_SCALE", "1").encode())
    return h.hexdigest()


def _paths(chapter: Chapter, out: Path):
    return (
        out / "notebooks" / f"{chapter.path.stem}.ipynb",
        out / "claims" / chapter.id,
        out / "runs" / f"{chapter.id}.json",
    )


def is_current(chapter: Chapter, out: Path, parameters: dict) -> bool:
    """A passing run of this chapter with the same cache key is in `out`."""
    notebook, claims_dir, run_file = _paths(chapter, out)
    if not (notebook.exists() and run_file.exists()):
        return False
    info = json.loads(run_file.read_text())
    if info.get("status") != "passed" or "modules" not in info:
        return False
    n_records = len(list(claims_dir.glob("*.json"))) if claims_dir.is_dir() else 0
    return info.get("key") == cache_key(
        chapter, parameters, info["modules"]
    ) and n_records == info.get("claims_total")


def _imported_modules(nb) -> list[str]:
    """The lmbook modules (relative paths) that the appended cell printed; the cell is removed."""
    cell = nb.cells.pop() if nb.cells and nb.cells[-1].source == MODULES_CELL else None
    for output in (cell or {}).get("outputs", []):
        for line in str(output.get("text", "")).splitlines():
            if line.startswith("LMBOOK_MODULES="):
                files = json.loads(line.split("=", 1)[1])
                return sorted(
                    str(Path(f).resolve().relative_to(LIB_DIR))
                    for f in files
                    if Path(f).resolve().is_relative_to(LIB_DIR)
                )
    return []


def _kernel_manager(log_path: Path):
    """A kernel manager whose kernel writes its stderr to `log_path` (not to the terminal: on Ctrl-C
    the kernel's own interrupt traceback would follow lmbook's one-line message)."""
    from jupyter_client.manager import AsyncKernelManager

    class LoggedKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd, **kw):
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "ab") as log:
                kw["stderr"] = log
                return await super()._async_launch_kernel(kernel_cmd, **kw)

    return LoggedKernelManager


class _DropUnknownParameter(logging.Filter):
    def filter(self, record):  # lmbook_chapter is injected on purpose
        return "Passed unknown parameter" not in record.getMessage()


@contextlib.contextmanager
def _quiet_unknown_parameter():
    log, drop = logging.getLogger("papermill"), _DropUnknownParameter()
    log.addFilter(drop)
    try:
        yield
    finally:
        log.removeFilter(drop)


@contextlib.contextmanager
def locked(out: Path):
    """Hold the run folder's lock; a second run into the same folder is refused (UsageError)."""
    from ..errors import UsageError

    try:
        out.mkdir(parents=True, exist_ok=True)
        handle = open(out / ".lock", "a+")
    except OSError as e:
        raise UsageError(
            f"cannot write the run folder {out} ({e.strerror}); pass --out with a folder you "
            "can write"
        ) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UsageError(
            f"another lmbook run is writing into {out}; wait for it to finish, or pass --out "
            "with another folder"
        ) from None
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _contract_problem(records: list[dict]) -> str:
    if len(records) < MIN_CLAIMS:
        return (
            f"the chapter recorded {len(records)} claims; "
            f"the chapter contract asks for at least {MIN_CLAIMS}"
        )
    if len(records) > MAX_CLAIMS:
        return (
            f"the chapter recorded {len(records)} claims; at most {MAX_CLAIMS} "
            "(the family-wise band assumes it): merge claims or split the chapter"
        )
    if not any(r.get("kind") == "breaks" for r in records):
        return (
            "the chapter has no 'where the theory breaks' claim (claims.breaks); "
            "the chapter contract asks for one"
        )
    return ""


def run_chapter(
    chapter: Chapter,
    profile: str,
    device: str,
    seed: int,
    out: Path,
    force: bool = False,
    progress: bool = True,
    verified_dir: Path | None = None,
) -> ChapterResult:
    """Execute one chapter into `out` (see module docstring) and return its result.

    With `verified_dir`, a full-profile run that reached its claims also writes its provenance file
    there (lmbook.provenance).
    """
    import jupytext
    import papermill as pm

    out = Path(out).resolve()
    notebook, claims_dir, run_file = _paths(chapter, out)
    parameters = {
        "profile": profile,
        "device": device,
        "seed": int(seed),
        "results_dir": str(claims_dir),
        "lmbook_chapter": chapter.id,
    }
    keyed = {"profile": profile, "seed": int(seed), "device_type": resolve_device(device).type}
    if not force and is_current(chapter, out, keyed):
        records = load_records(claims_dir) if claims_dir.is_dir() else []
        info = json.loads(run_file.read_text())
        return ChapterResult(
            chapter.id,
            chapter.title,
            "cached",
            len(records),
            len(records),
            info.get("wall_seconds", 0.0),
        )

    run_file.unlink(missing_ok=True)  # an interrupted run must not look current afterwards
    kernel_log = run_file.with_suffix(".kernel.log")
    kernel_log.unlink(missing_ok=True)
    shutil.rmtree(claims_dir, ignore_errors=True)
    notebook.parent.mkdir(parents=True, exist_ok=True)
    partial = notebook.with_name(f".{notebook.stem}.partial.ipynb")
    import nbformat

    nb = jupytext.read(chapter.path)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells.append(nbformat.v4.new_code_cell(MODULES_CELL))
    status, message = "passed", ""
    t0 = time.perf_counter()
    try:
        with _quiet_unknown_parameter():
            pm.execute_notebook(
                nb,
                str(partial),
                parameters=parameters,
                kernel_name="python3",
                cwd=str(chapter.path.parent),
                progress_bar=progress,
                log_output=False,
                execution_timeout=CELL_TIMEOUT_S,
                kernel_manager_class=_kernel_manager(kernel_log),
            )
    except pm.PapermillExecutionError as e:
        status = "failed" if e.ename == "ClaimFailed" else "error"
        message = (
            e.evalue if e.ename == "ClaimFailed" else f"{e.ename}: {e.evalue} (cell {e.exec_count})"
        )
    except Exception as e:  # a dead kernel, a cell past the timeout, no kernel at all
        status, message = "error", f"{type(e).__name__}: {e}"
        if kernel_log.exists() and kernel_log.stat().st_size:
            tail = kernel_log.read_text(errors="replace").strip().splitlines()[-5:]
            message += f"\nthe kernel's last words ({kernel_log}):\n" + "\n".join(tail)
    except BaseException:  # Ctrl-C: nothing of this run may look like a result
        partial.unlink(missing_ok=True)
        shutil.rmtree(claims_dir, ignore_errors=True)
        raise
    wall = time.perf_counter() - t0
    modules = []
    if partial.exists():
        executed = nbformat.read(partial, as_version=4)
        modules = _imported_modules(executed)
        if "papermill" in executed.metadata:  # papermill stores the whole input notebook there
            executed.metadata.papermill["input_path"] = chapter.path.name
        nbformat.write(executed, partial)
        os.replace(partial, notebook)
    records = load_records(claims_dir) if claims_dir.is_dir() else []
    passed = sum(bool(r["passed"]) for r in records)
    if status == "passed":
        problem = _contract_problem(records) or ("" if passed == len(records) else "a claim failed")
        if problem:
            status, message = "failed", problem
    if status == "passed" and any(m.startswith("engine") for m in modules):
        status, message = (
            "failed",
            "the chapter imported lmbook.engine; chapters import only the library",
        )
    info = {
        "chapter": chapter.id,
        "status": status,
        "key": cache_key(chapter, keyed, modules),
        "modules": modules,
        "wall_seconds": round(wall, 2),
        "profile": profile,
        "device": device_name(resolve_device(device)),
        "seed": int(seed),
        "claims_passed": passed,
        "claims_total": len(records),
        "torch": torch.__version__,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "message": message,
    }
    write_atomic(run_file, json.dumps(info, indent=2))
    scaled = any(r.get("prediction_scale", 1.0) != 1.0 for r in records)
    if (
        verified_dir is not None
        and profile == "full"
        and records
        and status != "error"
        and not scaled
    ):
        write_verified(verified_dir, info, records)
    return ChapterResult(chapter.id, chapter.title, status, passed, len(records), wall, message)


def run_chapters(
    chapters: list[Chapter],
    profile: str,
    device: str = "auto",
    seed: int = 0,
    out: Path | None = None,
    jobs: int = 1,
    force: bool = False,
    verified_dir: Path | None = None,
) -> list[ChapterResult]:
    """Run `chapters` (validated first: profile, device, jobs) and return their results in order."""
    from ..errors import UsageError

    check_profile(profile)
    resolve_device(device)
    if int(jobs) < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}")
    out = Path(out)
    with locked(out):
        return _run_all(chapters, profile, device, seed, out, int(jobs), force, verified_dir)


def worker_devices(device: str, jobs: int) -> list[str]:
    """The device of each of `jobs` workers: with several GPUs and "auto" or "cuda", worker i gets
    cuda:(i mod the GPU count), so chapters run side by side on their own GPUs; else all share
    `device`."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device in ("auto", "cuda") and count > 1:
        return [f"cuda:{i % count}" for i in range(jobs)]
    return [device] * jobs


def _run_all(
    chapters, profile, device, seed, out, jobs, force, verified_dir
) -> list[ChapterResult]:
    import queue

    from tqdm.auto import tqdm

    if jobs == 1:
        results = []
        for c in chapters:
            print(f"[lmbook] {c.id}: {c.title}", file=sys.stderr, flush=True)
            results.append(run_chapter(c, profile, device, seed, out, force, True, verified_dir))
        return results
    free = queue.Queue()
    for d in worker_devices(device, jobs):
        free.put(d)

    def one(c):
        d = free.get()
        try:
            return run_chapter(c, profile, d, seed, out, force, False, verified_dir)
        finally:
            free.put(d)

    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        with tqdm(total=len(chapters), desc="chapters", unit="ch") as bar:
            futures = [pool.submit(one, c) for c in chapters]
            results = []
            for f in futures:
                results.append(f.result())
                bar.update(1)
            return results
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def summary(results: list[ChapterResult]) -> str:
    width = max([7] + [len(r.id) for r in results])
    lines = [f"{'chapter'.ljust(width)}  claims  status   wall"]
    for r in results:
        lines.append(
            f"{r.id.ljust(width)}  {f'{r.claims_passed}/{r.claims_total}':>6}  "
            f"{r.status:<7}  {r.wall_seconds:6.1f}s"
        )
    total = sum(r.wall_seconds for r in results)
    ok = sum(r.ok for r in results)
    lines.append(
        f"{ok}/{len(results)} chapters passed, "
        f"{sum(r.claims_passed for r in results)}/{sum(r.claims_total for r in results)} claims, "
        f"{total:.1f}s"
    )
    for r in results:
        if not r.ok:
            lines.append(f"\nFAILED {r.id} ({r.status}):\n{r.message}")
    return "\n".join(lines)
