"""Paper-shaped tables from results.json files, with the published numbers beside each cell.

    python -m roloraexp.report TABLE_ID DIR [DIR ...] [--out results/] [--final] [--seeds N] [--wandb] [--html]
    python -m roloraexp.report --all DIR [DIR ...]

Reads every ``results.json`` under the folders given (and nothing else), fills the cells of a
table declaration (``roloraexp/tables/``) and writes ``<out>/<table>.md``, ``.tex`` and ``.csv`` plus the
table's figures (``--html``: also ``<table>.html``, one self-contained page; report_html.py). Each
cell is mean ± sample std (ddof = 1) over the completed seeds with the seed count, then the
paper's value and the difference. Files that cannot be read or lack
required keys are listed as skipped (and printed to stderr), never used; failed runs count as
failed seeds and are listed; two runs of one (cell, seed) keep the newest file (mtime).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import figures
from .errors import is_int, is_number
from .tables import TABLES
from .tables.spec import ABSENT, AVG, MEAN_RANK, PARAMS, Col, Setting, Table

PUBLISHED_DIR = Path(__file__).resolve().parent.parent / "results" / "published"
REQUIRED = ("status", "task", "method", "model", "seed")
REQUIRED_COMPLETED = ("metrics", "best_metrics")
MARK = "‡"  # † and * already mean "vanilla" and "T iterations" in ROLoRA's row labels
_MISSING = object()


@dataclass
class Run:
    path: Path
    mtime: float
    data: dict


# ---------------------------------------------------------------- reading results.json files

def _problem(data) -> str | None:
    """Why a parsed results.json cannot be used, or None."""
    if not isinstance(data, dict):
        return "not a JSON object"
    missing = [k for k in REQUIRED if k not in data]
    if data.get("status") == "completed":
        missing += [k for k in REQUIRED_COMPLETED if not isinstance(data.get(k), dict)]
    if missing:
        return "missing keys: " + ", ".join(missing)
    if data["status"] not in ("completed", "failed"):
        return f"status {data['status']!r} is neither 'completed' nor 'failed'"
    if not is_int(data["seed"]):
        return f"seed {data['seed']!r} is not an integer"
    return None


def load_runs(dirs) -> tuple[list[Run], list[tuple[Path, str]]]:
    """All results.json under `dirs` (a results.json file may be given directly) → (runs, skipped)."""
    paths = set()
    for d in map(Path, dirs):
        paths |= {d} if d.is_file() else set(d.rglob("results.json"))
    runs, skipped = [], []
    for path in sorted(paths):
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            skipped.append((path, f"unreadable JSON ({e})"))
            continue
        problem = _problem(data)
        if problem:
            skipped.append((path, problem))
        else:
            runs.append(Run(path, path.stat().st_mtime, data))
    return runs, skipped


def lookup(data: dict, path: str):
    """Value at a dotted path; "a|b" = the first of the alternatives that exists."""
    for alternative in path.split("|"):
        node = data
        for part in alternative.split("."):
            node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
            if node is _MISSING:
                break
        if node is not _MISSING:
            return node
    return _MISSING


def matches(data: dict, where: dict) -> bool:
    """All filters hold (a list of values = any of them; ABSENT in it accepts a run without the key).
    A failed run may have stopped before writing everything (its config, say): a key it lacks does
    not exclude it, so that its failure shows in the cell."""
    for path, want in where.items():
        wanted = want if isinstance(want, (list, tuple)) else [want]
        got = lookup(data, path)
        if got is _MISSING:
            if ABSENT in wanted or data.get("status") == "failed":
                continue
            return False
        if got not in wanted:
            return False
    return True


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


def ranks_key(data: dict, final: bool) -> str:
    """The ranks the tables report: at the best evaluation (`best_ranks`), like the metrics; the
    final `ranks` with --final or for runs written before `best_ranks` existed."""
    return "ranks" if final or "best_ranks" not in data else "best_ranks"


def value_of(run: Run, col: Col, final: bool, reads: str | None = None):
    """(value, None) or (None, why not) for one completed run in one cell; `reads` = the path of the
    metrics dict the cell shows (a DyLoRA row's "metrics_by_rank.3"), default best_metrics / metrics."""
    d = run.data
    if col.metric == MEAN_RANK:
        key = ranks_key(d, final)
        vals = list(d[key].values()) if isinstance(d.get(key), dict) else []
        if not vals or not all(is_number(v) for v in vals):
            return None, f"no numeric {key!r}"
        return sum(vals) / len(vals), None
    if col.metric == PARAMS:
        v = d.get("trainable_params")
        return (v, None) if is_number(v) else (None, "no 'trainable_params'")
    source = reads or ("metrics" if final else "best_metrics")
    metrics = lookup(d, source)
    v = metrics.get(col.metric) if isinstance(metrics, dict) else None
    if not is_number(v) or not math.isfinite(v):
        return None, f"no numeric {col.metric!r} in {source} (got {v!r})"
    return v * col.scale, None


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


# ---------------------------------------------------------------- rendering

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


def _tex(s: str) -> str:
    s = str(s)
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("−", "-"), ("—", "--"), ("†", r"$^\dagger$"),
                 ("*", r"$^\star$"), ("‡", r"$^\ddagger$"), ("^A", r"$^A$"), ("^B", r"$^B$")):
        s = s.replace(a, b)
    return s


def render(table: Table, df: pd.DataFrame, failed, filled: Filled, skipped, expected: int, final: bool,
           dirs, figure_paths) -> tuple[str, str]:
    """(Markdown, LaTeX) of the table with its legend and the lists of problems."""
    cols = table.cols
    by_cell = {(r["row"], r["col"]): r for r in df.to_dict("records")}
    md = [f"# {table.title}", "", f"`{table.id}` · results from: {', '.join(map(str, dirs))}", "",
          "| Method | " + " | ".join(c.label for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    tex = [f"% {table.id}: generated by python -m roloraexp.report; see {table.id}.md for the legend and problems",
           r"% needs \usepackage{booktabs}",
           r"\begin{table}[t]", r"\centering\small", r"\caption{" + _tex(table.title) + "}",
           r"\begin{tabular}{l" + "c" * len(cols) + "}", r"\toprule",
           "Method & " + " & ".join(_tex(c.label) for c in cols) + r" \\", r"\midrule"]
    for row in table.rows:
        parts = [cell_parts(by_cell[(row.key, c.key)]) for c in cols]
        md.append(f"| {row.label} | " + " | ".join(o + (f"<br>*{p}*" if p else "") for o, p in parts) + " |")
        tex.append(_tex(row.label) + " & " + " & ".join(_tex(o) for o, _ in parts) + r" \\")
        tex.append(r"\quad\textit{paper} & " + " & ".join(r"\textit{" + _tex(p.removeprefix("paper ")) + "}"
                                                         for _, p in parts) + r" \\")
    tex += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    md += [""] + [f"- {line}" for line in legend(table, expected, final)]
    tex += ["% " + line.replace("\n", " ") for line in legend(table, expected, final)]

    def section(title, lines):
        if lines:
            md.extend(["", f"## {title}", "", *lines])
            tex.extend([f"% {title}:", *(f"%   {line}" for line in lines)])

    for title, lines in sections(table, failed, filled, skipped):
        section(title, lines)
    section("Figures", [f"![{p.stem}]({p.name})" for p in figure_paths])
    return "\n".join(md) + "\n", "\n".join(tex) + "\n"


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
    from collections import Counter

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


# ---------------------------------------------------------------- entry point

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
        from .report_html import render_html

        written.append(out / f"{table_id}.html")
        written[-1].write_text(render_html(table, df, failed, filled, skipped, expected, final, dirs, figs))
    return df, written + figs


def upload_wandb(frames: dict[str, pd.DataFrame], images: list[Path], project: str | None = None,
                 entity: str | None = None, model: str | None = None) -> None:
    """Each table (as a ``wandb.Table`` under its id) and its figures to one W&B run per table,
    where its dashboard (``python -m roloraexp.dashboard``) shows them beside the runs: the same
    project (default: the runs' ``logger.project``), ``table`` and ``model.name`` config (the
    dashboard's run filter), group = the table. The run id is fixed per table (``report-<table>``,
    resumed), so uploading again updates the table the dashboard shows instead of adding a copy.
    ``WANDB_MODE=offline`` writes it locally for ``wandb sync``."""
    import wandb  # lazily: the report itself needs no W&B

    from .tracking import default_entity, default_project

    project, entity = project or default_project(), entity or default_entity(online=False)
    # Text columns as str (NaN in an object column would break W&B's type inference).
    text = lambda df: df.astype({c: str for c in df.columns if df[c].dtype == object})  # noqa: E731
    for tid, df in frames.items():
        run = wandb.init(project=project, entity=entity, id=f"report-{tid}", resume="allow", name=f"report {tid}",
                         group=tid, job_type="report", reinit="finish_previous",
                         config={"table": tid, "model": {"name": model or TABLES[tid].model}})
        try:
            run.log({tid: wandb.Table(dataframe=text(df)),
                     **{f"figures/{p.stem}": wandb.Image(str(p)) for p in images if p.stem.startswith(f"{tid}_")}})
        finally:
            run.finish()


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
