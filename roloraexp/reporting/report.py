"""Paper-shaped tables from results.json files, with the published numbers beside each cell.

    python -m roloraexp.report TABLE_ID DIR [DIR ...] [--out results/] [--final] [--seeds N] [--wandb] [--html]
    python -m roloraexp.report --all DIR [DIR ...]

Reads every ``results.json`` under the folders given (and nothing else), fills the cells of a
table declaration (``roloraexp/tables/``) and writes ``<out>/<table>.md``, ``.tex`` and ``.csv`` plus the
table's figures (``--html``: also ``<table>.html``, one self-contained page; html_page.py). Each
cell is mean ± sample std (ddof = 1) over the completed seeds with the seed count, then the
paper's value and the difference. Files that cannot be read or lack
required keys are listed as skipped (and printed to stderr), never used; failed runs count as
failed seeds and are listed; two runs of one (cell, seed) keep the newest file (mtime).

This module is the command (``python -m roloraexp.report`` forwards to its ``main``) and writes one
table's files (``build``); reading and filling is ``aggregate.py``, the text ``content.py``,
``markdown_latex.py`` and ``html_page.py``, the upload ``wandb_upload.py``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from ..errors import is_number
from ..tables import TABLES
from ..tables.query import ranks_key
from ..tables.spec import PARAMS, Table
from . import figures
from .aggregate import PUBLISHED_DIR, Filled, fill, load_runs, summarize
from .content import MARK, provenance_lines
from .html_page import render_html
from .markdown_latex import render
from .wandb_upload import upload_wandb


def draw_figures(table: Table, filled: Filled, out: Path, final: bool = False) -> list[Path]:
    """The table's per-cell figures (ranks / ω, from completed runs) and a memory plot if measured.
    The rank figure shows the ranks the table reports (`best_ranks` unless --final)."""
    paths, all_runs = [], {}
    for (row, col), runs in sorted(filled.cells.items()):
        done = [r.data for r in runs if r.data["status"] == "completed"]
        all_runs.update({str(r.path): r.data for r in runs if r.data["status"] == "completed"})
        if col == "params":
            continue
        reported = [{**d, "ranks": d.get(ranks_key(d, final))} for d in done]
        best = not final and any("best_ranks" in d for d in done)
        for kind, fn, runs_of in (("ranks", figures.rank_distribution, reported),
                                  ("omega", figures.omega_per_adapter, done)):
            with_key = [d for d in runs_of if d.get(kind)]
            # One figure per row and task: QQP Acc and QQP F1 are the same runs.
            png = out / f"{table.id}_{kind}_{row}_{with_key[0]['task'] if with_key else ''}.png"
            if kind in table.figures and with_key and png not in paths:
                best_title = f"Ranks at the best evaluation: {row}, {with_key[0]['task']}"
                title = best_title if kind == "ranks" and best else None
                paths.append(fn(with_key, png, title))
    if any(is_number(d.get("peak_memory_bytes")) and is_number(d.get("active_adapters")) for d in all_runs.values()):
        paths.append(figures.memory_vs_active(list(all_runs.values()), out / f"{table.id}_memory.png"))
    return paths


# ---------------------------------------------------------------- one table's files, and the command

def build(table_id: str, runs, skipped, dirs, out: Path, expected: int | None = None, final: bool = False,
          model: str | None = None, published_dir: Path = PUBLISHED_DIR,
          html: bool = False) -> tuple[pd.DataFrame, list[Path]]:
    """Fill, summarize, draw and write one table; returns its long DataFrame and the files written
    (``html``: also ``<table>.html``, one self-contained page, after the .md/.tex/.csv)."""
    table = TABLES[table_id]
    expected = expected or table.seeds
    filled = fill(table, runs, model)
    df, failed = summarize(table, filled, expected, final, published_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs = draw_figures(table, filled, out, final)
    md, tex = render(table, df, failed, filled, skipped, expected, final, dirs, figs)
    for m in provenance_lines(filled)[1]:
        print(f"report: {table_id}: the cells mix {m}", file=sys.stderr)
    for r, c, seed, path, why in failed:   # the README promises these on stderr too, not only in the .md
        print(f"report: {table_id}: failed seed {seed} of {r} / {c} ({path}): {why}", file=sys.stderr)
    for r, c, seed, kept, dropped in filled.duplicates:
        print(f"report: {table_id}: duplicate runs of {r} / {c} seed {seed}: kept {kept.path}, ignored "
              + ", ".join(str(d.path) for d in dropped), file=sys.stderr)
    written = [out / f"{table_id}.md", out / f"{table_id}.tex", out / f"{table_id}.csv"]
    written[0].write_text(md)
    written[1].write_text(tex)
    df.to_csv(written[2], index=False)
    if html:
        written.append(out / f"{table_id}.html")
        written[-1].write_text(render_html(table, df, failed, filled, skipped, expected, final, dirs, figs))
    return df, written + figs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m roloraexp.report", description=__doc__.split("\n\n")[0])
    p.add_argument("args", nargs="*", metavar="TABLE_ID DIR", help=f"a table id ({', '.join(TABLES)}) then folders")
    p.add_argument("--all", action="store_true", help="every table that at least one run fills (all args are folders)")
    p.add_argument("--out", type=Path, default=Path("results"), help="output folder (default: results/)")
    p.add_argument("--final", action="store_true", help="use the final evaluation (metrics) instead of best_metrics")
    p.add_argument("--seeds", type=int, default=None, help="seeds expected per cell (default: the paper's, 5)")
    p.add_argument("--model", help="override the table's model (e.g. tiny_roberta for a smoke run)")
    p.add_argument("--published", type=Path, default=PUBLISHED_DIR, help="folder of the published CSVs")
    p.add_argument("--strict", action="store_true", help="exit 1 when a file was skipped or a cell is incomplete")
    p.add_argument("--wandb", action="store_true", help="also log the tables (and figures) to W&B, one run per table, "
                   "where the dashboards (python -m roloraexp.dashboard) show them")
    p.add_argument("--wandb-project", help="W&B project for --wandb (default: logger.project, where the runs log)")
    p.add_argument("--wandb-entity", help="W&B entity for --wandb (default: logger.entity, else WANDB_ENTITY, else yours)")
    p.add_argument("--html", action="store_true",
                   help="also write <table>.html: one self-contained page (table, paper numbers, figures, provenance)")
    a = p.parse_args(argv)

    if a.all:
        table_ids, dirs = None, a.args
    elif len(a.args) >= 2:
        table_ids, dirs = [a.args[0]], a.args[1:]
        if a.args[0] not in TABLES:
            p.error(f"unknown table {a.args[0]!r}; known: {', '.join(TABLES)}")
    else:
        p.error("give TABLE_ID and at least one DIR, or --all and DIRs")
    if not dirs:
        p.error("give at least one folder")
    for d in dirs:
        if not Path(d).exists():
            p.error(f"no such file or folder: {d}")

    runs, skipped = load_runs(dirs)
    for path, why in skipped:
        print(f"report: skipped {path}: {why}", file=sys.stderr)
    if table_ids is None:
        table_ids = [t for t in TABLES if fill(TABLES[t], runs, a.model).cells]
        if not table_ids:
            print(f"report: no run under {', '.join(dirs)} fills any table", file=sys.stderr)
            return 1

    frames, images, incomplete = {}, [], False
    for tid in table_ids:
        df, written = build(tid, runs, skipped, dirs, a.out, a.seeds, a.final, a.model, a.published, a.html)
        frames[tid] = df
        images += [w for w in written if w.suffix == ".png"]
        cells = df[df["metric"] != PARAMS]
        n_incomplete = int(cells["mark"].fillna(False).astype(bool).sum())
        incomplete |= n_incomplete > 0
        pages = [w for w in written if w.suffix != ".png"]
        print(f"{tid}: {int((cells['n'] > 0).sum())}/{len(cells)} cells with results, {n_incomplete} marked {MARK} "
              f"→ {', '.join(str(w) for w in pages)}" + (f" (+{len(written) - len(pages)} figures)" if len(written) > len(pages) else ""))
    if a.wandb:
        try:
            upload_wandb(frames, images, a.wandb_project, a.wandb_entity, a.model)
        except ImportError:
            print("report: --wandb needs the wandb package (pip install wandb)", file=sys.stderr)
            return 2
    return 1 if a.strict and (skipped or incomplete) else 0


if __name__ == "__main__":
    sys.exit(main())
