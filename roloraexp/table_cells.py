"""Which cells of the declared paper tables a run fills, as W&B keys the dashboards read.

The report decides this after the fact from results.json (``report.fill``); a dashboard needs it
in the run itself, so the Tracker asks the same question of the run's config when the run starts
(the cell filters read only keys known then: method, task, model, ``table`` and ``config.*``) and
writes the answer into the run:

- config ``dashboard.<table>.row`` = the row's label as the paper prints it, and
  ``dashboard.<table>.cell`` = "<row> · <columns>": the dashboard groups runs by it, so a curve
  is one cell's mean over its seeds;
- summary ``table/<table>/<column>`` = the value the report shows in that cell (``best_metrics``,
  ×100 for GLUE, mean rank, # params), written when the run completes: one bar chart per column,
  one bar per row, is the table's shape.

Only runs tagged for a table (``table=<id>``, the tag ``make <id>`` and the sweep set) count, as in
the dashboard's run filter; the report also reads untagged runs of the table's model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .report import Run, matches, value_of
from .tables import TABLES
from .tables.spec import Col, Row, Table

CONFIG_KEY = "dashboard"


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


def run_identity(cfg) -> dict:
    """The keys of results.json a cell's filters read, from the run's (resolved) config."""
    from omegaconf import OmegaConf

    return {"method": cfg.method.name, "task": cfg.task.name, "model": cfg.model.name, "table": cfg.get("table"),
            "config": OmegaConf.to_container(cfg, resolve=True)}


def cells_of(run: dict, tables: dict[str, Table] | None = None) -> dict[str, RunCells]:
    """{table id: the cells the run fills} over the declared tables that read its `table` tag."""
    out = {}
    tag = run.get("table")
    for tid, table in (tables or TABLES).items():
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
