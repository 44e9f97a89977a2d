"""What the table declarations hold, for the Makefile and for people.

    python -m roloraexp.tables --names            every table id (make/tables.mk builds its targets from it)
    python -m roloraexp.tables --folders TABLE    the run folders its report reads (its own, then reused ones)
    python -m roloraexp.tables [--describe] [TABLE ...]   grid, rows, columns and published file (make tables-help)
    python -m roloraexp.tables --cost [TABLE ...] [--gpu-json FILE] [--seeds ...] [-- EXTRA]   runs, optimizer
                                                  steps and estimated GPU-hours (roloraexp/tables/cost.py)
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter

from . import TABLES
from .spec import Table


def _how(table: Table, row) -> str:
    """How a row is run: its overrides, R and K over the table's columns, its source, what it reads."""
    if row.note:
        return f"not run: {row.note}"
    settings = [s for c in table.cols if (s := table.setting(row, c)) is not None and not c.derived]
    ranks = sorted({s.rank for s in settings if s.rank is not None})
    parts = [" ".join(row.fixed)]
    parts += [f"R {'/'.join(map(str, ranks))}"] if ranks else []
    parts += [f"K {row.k}"] if row.k is not None else []
    parts += [f"reads {row.reads}"] if row.reads else []
    parts += [f"runs of {row.source}"] if row.source and row.source != table.id else []
    parts += [f"at {', '.join(row.at)}"] if row.at else []
    return "; ".join(parts)


def describe(table: Table) -> str:
    grid = table.grid()
    per_run = Counter((r.folder, r.key) for r in grid)
    lines = [f"{table.id}: {table.title}",
             f"  published  results/published/{table.published}" + (f" (×{table.published_scale:g})"
                                                                    if table.published_scale != 1 else ""),
             f"  model      {table.model}, experiment={table.experiment}, {table.seeds} seeds, tag/folder "
             + " + ".join(table.folders),
             "  columns    " + ", ".join(f"{c.label} [{c.task + ' ' if c.task else ''}{c.metric}"
                                         f"{f' R={c.rank}' if c.rank else ''}{f' {c.setting}' if c.setting else ''}]"
                                         for c in table.cols)]
    width = max(len(r.label) for r in table.rows)
    lines += [f"  {'rows' if i == 0 else '':<10} {r.label:<{width}}  {_how(table, r)}"
              for i, r in enumerate(table.rows)]
    lines.append(f"  grid       {len(grid)} runs per seed: "
                 + ", ".join(f"{folder}/{key} ×{n}" for (folder, key), n in per_run.items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    from . import cost   # here: cost imports the sweep, which imports describe from this module
    p = argparse.ArgumentParser(prog="python -m roloraexp.tables", description=__doc__.split("\n\n")[0])
    p.add_argument("tables", nargs="*", metavar="TABLE", help="table ids (default: all)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--names", action="store_true", help="print every table id, space-separated")
    mode.add_argument("--folders", action="store_true", help="print the run folders TABLE's report reads")
    mode.add_argument("--describe", action="store_true", help="print each table's declaration (the default)")
    mode.add_argument("--cost", action="store_true", help="print each table's runs, optimizer steps and GPU-hours")
    cost.add_arguments(p)
    argv = list(sys.argv[1:] if argv is None else argv)
    a = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    a.extra = argv[argv.index("--") + 1:] if "--" in argv else []   # Hydra overrides for every run (--cost)
    unknown = [t for t in a.tables if t not in TABLES]
    if unknown:
        p.error(f"unknown table {', '.join(unknown)}; known: {', '.join(TABLES)}")
    if a.cost:
        return cost.main(a)
    if a.names:
        print(" ".join(TABLES))
    elif a.folders:
        if len(a.tables) != 1:
            p.error("--folders takes one table id")
        print(" ".join(TABLES[a.tables[0]].folders))
    else:
        print("\n\n".join(describe(TABLES[t]) for t in a.tables or TABLES))
    return 0
