"""Full-scale provenance: one small JSON file per chapter in book/verified/, written by
`lmbook run --profile full`, committed, and shown on the chapter's page as "verified at full scale".

A file holds the chapter id, profile, device (the GPU's name), date (UTC), seed, wall time,
versions, claims passed/total and a compact copy of each claim (no notebooks, no figures).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..records import write_atomic

VERIFIED_DIR = Path("book") / "verified"
CLAIM_KEYS = (
    "claim",
    "statement",
    "kind",
    "predicted",
    "measured",
    "se",
    "tolerance",
    "tolerance_origin",
    "rival",
    "rival_name",
    "passed",
)


def write_verified(directory: Path, run_info: dict, records: list[dict]) -> Path:
    """Write (atomically) the provenance file of one chapter's full-profile run; return its path."""
    versions = records[0]["versions"] if records else {}
    entry = {
        "chapter": run_info["chapter"],
        "profile": run_info["profile"],
        "device": run_info["device"],
        "date": run_info["finished"],
        "seed": run_info["seed"],
        "wall_seconds": run_info["wall_seconds"],
        "status": run_info["status"],
        "versions": versions,
        "claims_passed": sum(bool(r["passed"]) for r in records),
        "claims_total": len(records),
        "claims": [{k: r.get(k) for k in CLAIM_KEYS} for r in records],
    }
    path = Path(directory) / f"{run_info['chapter']}.json"
    write_atomic(path, json.dumps(entry, indent=2) + "\n")
    return path


def load_verified(directory: Path) -> dict[str, dict]:
    """Committed provenance files by chapter id (empty when there are none)."""
    out = {}
    for path in sorted(Path(directory).glob("*.json")):
        entry = json.loads(path.read_text())
        out[entry["chapter"]] = entry
    return out


def panel_markdown(entry: dict | None, chapter: str | None = None) -> str:
    """The MyST admonition shown at the end of a chapter page."""
    if entry is None:
        return (
            "```{admonition} Not yet verified at full scale\n:class: note\n"
            "No full-scale records have been committed for this chapter. "
            f"`lmbook run {chapter or 'CHAPTER'} --profile full` "
            "on a GPU writes them to `book/verified/`.\n```"
        )
    v = entry.get("versions", {})
    return (
        f"```{{admonition}} Verified at full scale: "
        f"{entry['claims_passed']}/{entry['claims_total']} claims passed\n"
        f":class: {'tip' if entry['claims_passed'] == entry['claims_total'] else 'warning'}\n"
        f"Profile `{entry['profile']}` on **{entry['device']}**, {entry['date'][:10]} "
        f"(seed {entry['seed']}, {entry['wall_seconds']:.0f} s); lmbook {v.get('lmbook')}, "
        f"torch {v.get('torch')}, Python {v.get('python')}.\n```"
    )
