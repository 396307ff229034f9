"""The `lmbook` command: list, run, sweep, claims (and claims diff), build, new, bench.

Exit 0 all passed, 1 a claim or cell failed, 2 bad arguments (with the valid choices named),
130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..errors import UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 already; keep its message, name the help
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n(see `{self.prog} --help`)\n")


def _root(args) -> Path:
    from .chapters import repo_root

    return Path(args.root).resolve() if args.root else repo_root()


def cmd_list(args) -> int:
    from .chapters import PARTS, discover

    root = _root(args)
    rows = [c.as_dict(root) for c in discover(root)]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(
                f"{r['id']:<24} part {r['part']} ({PARTS[r['part']]})  {r['title']}  [{r['path']}]"
            )
    return 0


def cmd_run(args) -> int:
    from ..profiles import check_profile, default_profile, resolve_device
    from .chapters import discover, select
    from .ledger import load_records, text_table
    from .provenance import VERIFIED_DIR
    from .runner import default_out, run_chapters, summary

    root = _root(args)
    profile = check_profile(args.profile or default_profile())
    resolve_device(args.device)
    chapters = select(discover(root), args.chapters)
    out = Path(args.out) if args.out else default_out(root, profile)
    verified = None if args.no_record else root / VERIFIED_DIR
    results = run_chapters(
        chapters,
        profile,
        args.device,
        args.seed,
        out,
        jobs=args.jobs,
        force=args.force,
        verified_dir=verified,
    )
    if profile == "full" and verified is not None:
        print(f"full-scale records: {verified} (commit them to show them on the website)")
    ran = {r.id for r in results}
    records = [r for r in load_records(out) if r["chapter"] in ran] if out.is_dir() else []
    if records:
        print(text_table(records))
        print()
    print(summary(results))
    print(f"records: {out}")
    return 0 if all(r.ok for r in results) else 1


def cmd_sweep(args) -> int:
    from ..profiles import check_profile, resolve_device
    from .chapters import discover, select
    from .sweep import SWEEP_FILE, parse_seeds, sweep, text_report, write_report

    root = _root(args)
    seeds = parse_seeds(args.seeds)
    profile = check_profile(args.profile)
    resolve_device(args.device)
    chapters = select(discover(root), args.chapters)
    out = Path(args.out) if args.out else root / "_build" / "sweeps" / profile
    report = sweep(
        chapters,
        seeds,
        out,
        profile,
        args.device,
        args.jobs,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(text_report(report))
    print(f"report: {write_report(report, out / 'sweep.json')}")
    if args.record:
        print(
            f"recorded for the status page: {write_report(report, root / SWEEP_FILE)} (commit it)"
        )
    return 0 if report["ok"] else 1


def cmd_claims(args) -> int:
    from ..profiles import default_profile
    from .ledger import incomplete_chapters, load_records, markdown_table, text_table
    from .runner import default_out

    if args.dir[:1] == ["diff"]:
        return cmd_claims_diff(args)
    if len(args.dir) > 1:
        raise UsageError(
            f"`lmbook claims` takes one run folder, or `diff OLD NEW` (got {' '.join(args.dir)})"
        )
    if args.max_drift is not None:
        raise UsageError("--max-drift applies to `lmbook claims diff OLD NEW` only")
    run_dir = Path(args.dir[0]) if args.dir else default_out(_root(args), default_profile())
    records = load_records(run_dir)
    unfinished = incomplete_chapters(run_dir)
    records = [r for r in records if r["chapter"] not in unfinished]
    if args.format == "json":
        print(json.dumps(records, indent=2))
    elif not records:
        print(f"no claim records in {run_dir}")
    else:
        print(markdown_table(records) if args.format == "markdown" else text_table(records))
    for c in unfinished:
        print(
            f"{c}: the run did not finish (interrupted or still running); "
            "its records are not counted",
            file=sys.stderr,
        )
    return 0 if records and not unfinished and all(r["passed"] for r in records) else 1


def cmd_claims_diff(args) -> int:
    from .diff import compare, load_ledger, markdown_report, text_report, verdict

    if len(args.dir) != 3:
        raise UsageError(
            "usage: lmbook claims diff OLD NEW [--format table|json|markdown] [--max-drift Z], "
            "OLD and NEW run folders or ledger JSON files"
        )
    if args.max_drift is not None and not args.max_drift > 0:
        raise UsageError(f"--max-drift must be a positive number of SEs, got {args.max_drift}")
    rows = compare(load_ledger(args.dir[1]), load_ledger(args.dir[2]))
    code, reasons = verdict(rows, args.max_drift)
    if args.format == "json":
        print(json.dumps({"claims": rows, "exit": code, "reasons": reasons}, indent=2))
    elif args.format == "markdown":
        print(markdown_report(rows, reasons))
    else:
        print(text_report(rows, reasons))
    return code


def cmd_build(args) -> int:
    from ..profiles import check_profile, default_profile
    from .site import build

    return build(
        _root(args),
        check_profile(args.profile or default_profile()),
        jobs=args.jobs,
        runs=args.runs,
    )


def cmd_new(args) -> int:
    from .scaffold import new_chapter

    root = _root(args)
    path = new_chapter(root, args.id, args.part, args.title)
    print(f"wrote {path.relative_to(root)} and listed it in _toc.yml, its part page and the README")
    print(
        "next: write the chapter (CONTRIBUTING.md), replace the placeholder claim, then "
        f"`lmbook run {args.id}` and `lmbook sweep {args.id} --seeds 100-119`"
    )
    return 0


def cmd_bench(args) -> int:
    from .bench import run, text_table

    result = run(
        args.benchmark,
        models=args.models,
        width=args.width,
        steps=args.steps,
        batch=args.batch,
        dtype=args.dtype,
        threads=args.threads,
        repeats=args.repeats,
    )
    print(json.dumps(result, indent=2) if args.format == "json" else text_table(result))
    return 0 if result["agree"] else 1


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="lmbook",
        description="Learning Mechanics, executable: run chapters, check claims, build the book.",
    )
    p.add_argument(
        "--root", help="project folder holding notebooks/ and _toc.yml (default: this checkout)"
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("list", help="list the chapters")
    s.add_argument("--format", choices=("table", "json"), default="table")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("run", help="execute chapters and assert their claims")
    s.add_argument(
        "chapters", nargs="*", metavar="CHAPTER", help="chapter ids or file stems (default: all)"
    )
    s.add_argument(
        "--profile",
        choices=("ci", "full"),
        help="ci (2-core CPU, the default on every device) or full (one large GPU)",
    )
    s.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", help="run folder (default: _build/runs/PROFILE)")
    s.add_argument("--jobs", type=int, default=1, help="chapters run at once")
    s.add_argument("--force", action="store_true", help="execute even chapters that are current")
    s.add_argument(
        "--no-record",
        action="store_true",
        help="with --profile full, do not write the full-scale records to book/verified/",
    )
    s.set_defaults(func=cmd_run)

    s = sub.add_parser(
        "sweep", help="run chapters over many seeds and report each claim's calibration"
    )
    s.add_argument(
        "chapters", nargs="*", metavar="CHAPTER", help="chapter ids or file stems (default: all)"
    )
    s.add_argument("--seeds", required=True, help="a range A-B (e.g. 100-119) or a list A,B,C")
    s.add_argument("--profile", choices=("ci", "full"), default="ci")
    s.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    s.add_argument("--jobs", type=int, default=1, help="chapters run at once")
    s.add_argument(
        "--out", help="folder for the runs, one per seed (default: _build/sweeps/PROFILE)"
    )
    s.add_argument(
        "--record",
        action="store_true",
        help="also write the report to book/calibration/sweep.json for the status page",
    )
    s.set_defaults(func=cmd_sweep)

    s = sub.add_parser(
        "claims",
        help="print the claims ledger of a run, or `claims diff OLD NEW`: drift between two runs",
        description="`lmbook claims [DIR]` prints a run's ledger; `lmbook claims diff OLD NEW` "
        "compares two runs (run folders or ledger JSON files such as the site's claims.json): "
        "status changes, the drift of each measurement in combined SEs, and moved predictions or "
        "budgets. Exit 1 on a new failure or, with --max-drift Z, a drift beyond Z.",
    )
    s.add_argument(
        "dir",
        nargs="*",
        metavar="DIR | diff OLD NEW",
        help="run folder (default: _build/runs/PROFILE), or `diff OLD NEW`",
    )
    s.add_argument("--format", choices=("table", "json", "markdown"), default="table")
    s.add_argument(
        "--max-drift",
        type=float,
        metavar="Z",
        help="with diff: exit 1 when a measurement moved by more than Z combined SEs",
    )
    s.set_defaults(func=cmd_claims)

    s = sub.add_parser(
        "build", help="execute what is not current and build the HTML site into _build/html"
    )
    s.add_argument(
        "--profile", choices=("ci", "full"), help="default: ci on every device (ask for full)"
    )
    s.add_argument("--jobs", type=int, default=1)
    s.add_argument(
        "--runs",
        nargs="+",
        metavar="DIR",
        help="build from these run folders (e.g. one per GPU job, merged) and execute nothing",
    )
    s.set_defaults(func=cmd_build)

    s = sub.add_parser(
        "new", help="write a chapter skeleton that meets the contract, and list it in _toc.yml"
    )
    s.add_argument("id", metavar="ID", help="the chapter id, e.g. signal-propagation")
    s.add_argument("--part", type=int, required=True, help="1-5, the body of work")
    s.add_argument("--title", required=True, help="the chapter's title")
    s.set_defaults(func=cmd_new)

    s = sub.add_parser(
        "bench", help="time a batched computation against its plain loop (exit 1 if they disagree)"
    )
    s.add_argument(
        "benchmark",
        metavar="BENCHMARK",
        help="ensemble: many small MLPs trained at once vs one by one",
    )
    s.add_argument("--models", type=int, default=64, help="number of MLPs (default 64)")
    s.add_argument(
        "--width", type=int, default=64, help="hidden width of the two hidden layers (default 64)"
    )
    s.add_argument("--steps", type=int, default=100, help="gradient steps (default 100)")
    s.add_argument(
        "--batch", type=int, default=128, help="batch size, shared by all models (default 128)"
    )
    s.add_argument("--dtype", default="float32", help="float32 (default) or float64")
    s.add_argument(
        "--threads",
        type=int,
        help="torch threads for all three methods "
        "(default: torch's; 1 is steadier on a busy machine)",
    )
    s.add_argument(
        "--repeats", type=int, default=1, help="time each method this many times, keep the best"
    )
    s.add_argument("--format", choices=("table", "json"), default="table")
    s.set_defaults(func=cmd_bench)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"lmbook: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "lmbook: interrupted; unfinished chapters keep no records (rerun them)",
            file=sys.stderr,
            flush=True,
        )
        sys.stdout.flush()
        os._exit(130)  # do not wait for chapter threads still running


if __name__ == "__main__":
    sys.exit(main())
