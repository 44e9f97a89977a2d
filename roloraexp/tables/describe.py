"""A table's declaration in words (``python -m roloraexp.tables``, ``--describe`` of the sweep): its
grid, rows and columns. Apart from cli.py so that the sweep can use it without importing the command line."""
from __future__ import annotations

from collections import Counter

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
