"""Which cells of the declared paper tables a run fills, and the value it shows there.

One reading of a run for both of its readers: the report (``roloraexp/reporting/``) decides after
the fact from results.json which cell each run fills; the Tracker (``roloraexp/tracking.py``) asks
the same question of the run's config when the run starts, so that the W&B dashboards can group
runs by cell. The cell filters read only keys known then (method, task, model, ``table`` and
``config.*``), and the Tracker writes the answer into the run:

- config ``dashboard.<table>.row`` = the row's label as the paper prints it, and
  ``dashboard.<table>.cell`` = "<row> · <columns>": the dashboard groups runs by it, so a curve
  is one cell's mean over its seeds;
- summary ``table/<table>/<column>`` = the value the report shows in that cell (``best_metrics``,
  ×100 for GLUE, mean rank, # params), written when the run completes: one bar chart per column,
  one bar per row, is the table's shape.

Only runs tagged for a table (``table=<id>``, the tag ``make <id>`` and the sweep set) count, as in
the dashboard's run filter; the report also reads untagged runs of the table's model.

Imports the standard library, ``roloraexp.errors`` and the table declarations only: training
imports it, and must not pull in the reporting wing (tests/test_architecture.py checks).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import is_number
from .spec import ABSENT, MEAN_RANK, PARAMS, Col, Row, Table

CONFIG_KEY = "dashboard"
_MISSING = object()


@dataclass
class Run:
    """One results.json: where it is, when it was written (the newest of two runs of a cell wins), its contents."""
    path: Path
    mtime: float
    data: dict


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


# ---------------------------------------------------------------- the cells a run fills, for W&B

def metric_key(table_id: str, col_key: str) -> str:
    """Summary key of a run's value in one column of a table."""
    return f"table/{table_id}/{col_key}"


def config_path(table_id: str, what: str) -> str:
    """Dotted config path of ``dashboard.<table>.<what>`` (what: "row" or "cell")."""
    return f"{CONFIG_KEY}.{table_id}.{what}"


@dataclass
class RunCells:
    """The cells of one table a run fills, as (row, column) pairs."""
    table: Table
    cells: list[tuple[Row, Col]] = field(default_factory=list)

    @property
    def rows(self) -> list[Row]:
        return list({row.key: row for row, _ in self.cells}.values())

    @property
    def cols(self) -> list[Col]:
        return list({col.key: col for _, col in self.cells}.values())

    @property
    def row_label(self) -> str:
        return " / ".join(r.label for r in self.rows)

    @property
    def cell_label(self) -> str:
        shown = [c.label for c in self.cols if not c.derived] or [c.label for c in self.cols]
        return f"{self.row_label} · {' / '.join(shown)}"


def run_identity(config: dict) -> dict:
    """The keys of results.json a cell's filters read, from the run's resolved config as plain
    containers (``OmegaConf.to_container(cfg, resolve=True)``: this module imports no OmegaConf)."""
    return {"method": config["method"]["name"], "task": config["task"]["name"], "model": config["model"]["name"],
            "table": config.get("table"), "config": config}


def _declared() -> dict[str, Table]:
    # Looked up at each call, not bound at import: roloraexp.tables imports the modules of its
    # package while it collects the declarations, this one among them, before TABLES exists.
    from . import TABLES

    return TABLES


def cells_of(run: dict, tables: dict[str, Table] | None = None) -> dict[str, RunCells]:
    """{table id: the cells the run fills} over the declared tables that read its `table` tag."""
    out = {}
    tag = run.get("table")
    for tid, table in (tables or _declared()).items():
        if tag is None or tag not in table.folders or not matches(run, {"model": table.model}):
            continue
        found = RunCells(table)
        for row in table.rows:
            hits = [col for col in table.cols if (f := table.filters(row, col)) is not None and matches(run, f)]
            if any(not c.derived for c in hits):   # the # Params column alone takes every run of a row
                found.cells += [(row, col) for col in hits]
        if found.cells:
            out[tid] = found
    return out


def config_entry(cells: dict[str, RunCells]) -> dict:
    """The run's ``dashboard`` config: {table: {"row": label, "cell": label}}."""
    return {tid: {"row": c.row_label, "cell": c.cell_label} for tid, c in cells.items()}


def cell_values(cells: dict[str, RunCells], result: dict) -> dict[str, float]:
    """{``table/<table>/<column>``: value} of a completed run, as the report reads its cells."""
    if result.get("status") != "completed":
        return {}
    run = Run(Path("results.json"), 0.0, result)
    values = {}
    for tid, found in cells.items():
        for row, col in found.cells:
            setting = found.table.setting(row, col)
            v, _ = value_of(run, col, final=False, reads=setting.reads if setting is not None else None)
            if v is not None:
                values[metric_key(tid, col.key)] = v
    return values
