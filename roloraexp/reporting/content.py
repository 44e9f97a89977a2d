"""What every rendering of a table says, in whatever format: a cell's two lines (ours, and the
paper's with Δ), the legend, and the lists under the table (rows not run, failed seeds, duplicates,
skipped files, runs that fit no cell, provenance). The Markdown and LaTeX (``markdown_latex.py``)
and the HTML page (``html_page.py``) are built from these, so they never disagree.
"""
from __future__ import annotations

import math
from collections import Counter

from ..tables.spec import PARAMS, Table
from .aggregate import Filled

MARK = "‡"  # † and * already mean "vanilla" and "T iterations" in ROLoRA's row labels


def _fmt(v, digits=2) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _fmt_params(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    for unit, div in (("M", 1e6), ("K", 1e3)):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.0f}"


def cell_parts(rec) -> tuple[str, str]:
    """("89.12 ± 0.45 (5)", "paper 89.90 ± 0.73, Δ −0.78") for one cell record."""
    if rec["metric"] == PARAMS:
        pub = rec.get("published_text")
        return _fmt_params(rec["mean"]), f"paper {pub}" if isinstance(pub, str) else ""
    if rec.get("note"):  # a row this project does not run: no seeds to count
        ours = "—"
    else:
        ours = _fmt(rec["mean"])
        if not math.isnan(rec.get("std", math.nan)):
            ours += f" ± {_fmt(rec['std'])}"
        ours += f" ({int(rec['n'])}/{rec['expected']}){MARK}" if rec["mark"] else f" ({int(rec['n'])})"
    paper = ""
    if not math.isnan(rec.get("published", math.nan)):
        paper = f"paper {_fmt(rec['published'])}"
        if not math.isnan(rec.get("published_std", math.nan)):
            paper += f" ± {_fmt(rec['published_std'])}"
        if not math.isnan(rec["diff"]):
            paper += f", Δ {rec['diff']:+.2f}".replace("-", "−")
    return ours, paper


def legend(table: Table, expected: int, final: bool) -> list[str]:
    metrics = ", ".join(f"{c.label}: {c.metric}" for c in table.cols)
    return [
        "Each cell: mean ± sample standard deviation (ddof = 1) over the completed seeds, (n) = their number; "
        "under it the paper's value (± its std where printed) and Δ = ours − paper.",
        f"Metric: {'final evaluation (`metrics`, --final)' if final else 'best evaluation of each run (`best_metrics`)'}. "
        "GLUE scores ×100 (percent); SQuAD and ROUGE are percent already; mean rank = mean over adapters of "
        + ("`ranks` (the final ranks)." if final else
           "`best_ranks` (the ranks at the best evaluation; `ranks` for runs written without it)."),
        f"Columns: {metrics}.",
        f"{MARK} (n/{expected}): fewer than {expected} completed seeds, or a failed seed in the cell "
        "(missing or failed runs; see below). ALL Avg = mean over tasks (Acc/F1 pairs averaged first), "
        "only when every task has a value.",
    ]


def sections(table: Table, failed, filled: Filled, skipped) -> list[tuple[str, list[str]]]:
    """The lists under a table, as (title, Markdown lines): rows not run, failed seeds, duplicates,
    skipped files, runs that fit no cell, provenance. The Markdown, LaTeX and HTML outputs show these."""
    lines, mixed = provenance_lines(filled)
    return [
        ("Rows this project does not run (the paper's numbers only)",
         [f"- {row.label}: {row.note}" for row in table.rows if row.note]),
        ("Failed seeds", [f"- {r} / {c}, seed {s}: {why} (`{p}`)" for r, c, s, p, why in failed]),
        ("Duplicate runs (the newest file is kept)",
         [f"- {r} / {c}, seed {s}: kept `{k.path}`; ignored " + ", ".join(f"`{d.path}`" for d in drop)
          for r, c, s, k, drop in filled.duplicates]),
        ("Skipped files (not used)", [f"- `{p}`: {why}" for p, why in skipped]),
        ("Runs that match this table but none of its cells",
         [f"- `{r.path}`: method={r.data['method']} task={r.data['task']} seed={r.data['seed']}"
          for r in filled.unmatched]),
        ("Provenance", lines + [f"- **Warning:** the cells mix {m}" for m in mixed]),
    ]


def provenance_lines(filled: Filled) -> tuple[list[str], list[str]]:
    """What the table's completed runs ran on (results.json ``provenance``), and what they disagree on:
    a table whose cells mix package versions or commits is worth a second look."""
    runs = {str(r.path): r.data for cell in filled.cells.values() for r in cell if r.data["status"] == "completed"}
    seen: dict[str, Counter] = {}
    for data in runs.values():
        prov = data.get("provenance") or {}
        facts = {**{f"{k} {v}": k for k, v in (prov.get("versions") or {}).items() if v},
                 **({f"commit {prov['git_commit'][:10]}" + (" (dirty)" if prov.get("git_dirty") else ""): "commit"}
                    if prov.get("git_commit") else {}),
                 **({f"device {prov['device']}": "device"} if prov.get("device") else {})}
        for fact, key in facts.items():
            seen.setdefault(key, Counter())[fact] += 1
    missing = sum(1 for d in runs.values() if not d.get("provenance"))
    lines = [f"- {key}: " + ", ".join(f"{fact.split(' ', 1)[1]} ({n} runs)" for fact, n in counter.most_common())
             for key, counter in seen.items()]
    if missing:
        lines.append(f"- {missing} runs carry no provenance (written before it was recorded)")
    mixed = [f"{key} (" + ", ".join(fact.split(" ", 1)[1] for fact in counter) + ")"
             for key, counter in seen.items() if len(counter) > 1 and key != "device"]
    return lines, mixed
