"""Reading the runs and filling a table: every results.json under the folders given, each run in
the cells whose filters it passes (``fill``), and one record per cell, ours beside the paper's
(``summarize``).

Each cell is mean ± sample std (ddof = 1) over the completed seeds with the seed count, then the
paper's value and the difference. Files that cannot be read or lack required keys are returned as
skipped, never used; failed runs count as failed seeds; two runs of one (cell, seed) keep the
newest file (mtime). Which cell a run fills, and the value it shows there, is ``tables/query.py``'s
reading, shared with the Tracker.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..results import RESULTS_FILE, ResultError, read_file
from ..tables.query import Run, matches, value_of
from ..tables.spec import AVG, PARAMS, Setting, Table

PUBLISHED_DIR = Path(__file__).resolve().parents[2] / "results" / "published"


# ---------------------------------------------------------------- reading results.json files

def load_runs(dirs) -> tuple[list[Run], list[tuple[Path, str]]]:
    """All results.json under `dirs` (a results.json file may be given directly) → (runs, skipped).
    Read through the schema (roloraexp/results.py); a table shows completed and failed runs only."""
    paths = set()
    for d in map(Path, dirs):
        paths |= {d} if d.is_file() else set(d.rglob(RESULTS_FILE))
    runs, skipped = [], []
    for path in sorted(paths):
        try:
            data = read_file(path)
        except ResultError as e:
            skipped.append((path, e.reason))
            continue
        if data["status"] not in ("completed", "failed"):
            skipped.append((path, f"status {data['status']!r} is neither 'completed' nor 'failed'"))
        else:
            runs.append(Run(path, path.stat().st_mtime, data))
    return runs, skipped


# ---------------------------------------------------------------- filling a table

@dataclass
class Filled:
    """What a table got from the runs: per cell the (deduplicated) runs, and what was set aside."""
    cells: dict            # (row key, col key) -> list[Run], newest run per seed
    duplicates: list       # (row, col, seed, kept Run, [dropped Runs])
    unmatched: list        # runs that pass the table's filters but fit no cell


def fill(table: Table, runs: list[Run], model: str | None = None) -> Filled:
    """Each run into every cell whose filters it passes (a run of the model and `table` tags the table reads)."""
    where = {"model": model or table.model}
    tags = (None, table.id, *table.accept)
    cell_filters = [(row.key, col, f) for row in table.rows for col in table.cols
                    if (f := table.filters(row, col)) is not None]
    raw, unmatched = defaultdict(list), []
    for run in runs:
        if run.data.get("table") not in tags or not matches(run.data, where):
            continue
        hit = False
        for row_key, col, cell_where in cell_filters:
            if matches(run.data, cell_where):
                raw[(row_key, col.key)].append(run)
                hit |= col.metric != PARAMS  # the # Params column takes every run of its row
        if not hit:
            unmatched.append(run)
    cells, duplicates = {}, []
    for cell, cell_runs in raw.items():
        by_seed = defaultdict(list)
        for run in cell_runs:
            # The # Params column pools all tasks: a "duplicate" there is the same task and seed.
            by_seed[(run.data["task"], run.data["seed"])].append(run)
        kept = []
        for (_, seed), group in sorted(by_seed.items(), key=lambda kv: str(kv[0])):
            group.sort(key=lambda r: (r.mtime, str(r.path)))
            kept.append(group[-1])
            if len(group) > 1 and cell[1] != "params":
                duplicates.append((*cell, seed, group[-1], group[:-1]))
        cells[cell] = kept
    return Filled(cells, duplicates, unmatched)


# ---------------------------------------------------------------- ours beside the paper's

def load_published(table: Table, published_dir: Path = PUBLISHED_DIR) -> pd.DataFrame:
    """The paper's CSV, indexed by row key in the declaration's order; checked against the declaration:
    every published row and column present, and no row the declaration does not know. A CSV may list
    an ``extra`` row (ours, not in the paper) with empty cells, so a reader sees it was not forgotten."""
    df = pd.read_csv(Path(published_dir) / table.published, dtype={"row": str}).set_index("row")
    want_rows = list(dict.fromkeys(r.published or r.key for r in table.rows if not r.extra))
    known = list(dict.fromkeys(r.published or r.key for r in table.rows))
    want_cols = [c.key for c in table.cols]
    if (set(want_rows) - set(df.index) or set(df.index) - set(known) or df.index.duplicated().any()
            or [c for c in want_cols if c not in df.columns]):
        raise ValueError(f"{table.published}: rows {list(df.index)} / columns {list(df.columns)} do not match "
                         f"the declaration of {table.id} (rows {want_rows}, columns {want_cols})")
    return df.loc[[r for r in known if r in df.index]]


def summarize(table: Table, filled: Filled, expected: int, final: bool,
              published_dir: Path = PUBLISHED_DIR) -> tuple[pd.DataFrame, list]:
    """One record per cell (long format) + the failed seeds [(row, col, seed, path, reason)]."""
    pub = load_published(table, published_dir)
    records, failed = [], []
    for row in table.rows:
        prow = pd.Series(dtype=object) if row.extra else pub.loc[row.published or row.key]
        for col in table.cols:
            rec = {"table": table.id, "row": row.key, "row_label": row.label, "col": col.key,
                   "col_label": col.label, "metric": col.metric, "expected": expected, "note": row.note or ""}
            reads = (table.setting(row, col) or Setting()).reads
            if col.metric == AVG:  # ours is filled below, from the row's other cells
                records.append({**rec, "published": _num(prow.get(col.key)) * table.published_scale})
                continue
            values, seeds, n_failed = [], [], 0
            for run in filled.cells.get((row.key, col.key), []):
                v, why = (None, run.data.get("error") or "status failed") if run.data["status"] == "failed" \
                    else value_of(run, col, final, reads)
                if v is None and col.metric == PARAMS:
                    continue  # informational column: a failure is listed once, in its task's cell
                if v is None:
                    n_failed += 1
                    failed.append((row.key, col.key, run.data["seed"], run.path, why))
                else:
                    values.append(v), seeds.append(run.data["seed"])
            s = pd.Series(values, dtype=float)
            rec.update(mean=s.mean() if len(s) else math.nan, std=s.std(ddof=1) if len(s) > 1 else math.nan,
                       n=len(s), n_failed=n_failed, seeds=" ".join(map(str, sorted(seeds))))
            if col.metric == PARAMS:  # informational: the paper's text (e.g. "442K (0.24%)"), no Δ
                rec.update(published_text=prow.get("params"), mark=False, seeds="")
            else:
                rec.update(mark=not row.note and (len(s) < expected or n_failed > 0),  # a row not run: nothing missing
                           published=_num(prow.get(col.key)) * table.published_scale,
                           published_std=_num(prow.get(f"{col.key}_std")) * table.published_scale)
            records.append(rec)
    df = pd.DataFrame.from_records(records)
    _fill_avg(table, df)
    df["diff"] = df["mean"] - df.get("published", math.nan)
    df = df.astype({"n": "Int64", "n_failed": "Int64", "mark": bool})
    return df, failed


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _fill_avg(table: Table, df: pd.DataFrame) -> None:
    """ALL Avg as the paper computes it: mean over tasks, a task's columns (Acc/F1) averaged first."""
    groups = list(dict.fromkeys(c.group for c in table.cols if c.group and c.metric not in (AVG, PARAMS)))
    for i in df.index[df["metric"] == AVG]:
        cells = df[(df["row"] == df.at[i, "row"]) & df["col"].isin(
            [c.key for c in table.cols if c.group in groups and c.metric not in (AVG, PARAMS)])]
        key_group = {c.key: c.group for c in table.cols}
        per_task = cells.groupby(cells["col"].map(key_group))["mean"].agg(lambda m: m.mean() if m.notna().all() else math.nan)
        if cells.empty:
            continue
        complete = len(per_task) == len(groups) and per_task.notna().all()
        df.loc[i, ["mean", "n", "n_failed", "mark"]] = [per_task.mean() if complete else math.nan,
                                                        int(cells["n"].min()), int(cells["n_failed"].sum()),
                                                        bool(cells["mark"].any())]
