"""Sweeps: many runs of ``run()`` and what became of each.

- ``summary.py``: a Hydra multirun's end (``python -m roloraexp.run ... -m``): every job's status,
  main metric and error, printed and written as ``sweep_summary.csv`` / ``.json``; the exit status.
- ``table_grid.py``: a paper table's grid (``make <table>``, ``python -m roloraexp.tables.sweep``):
  the cells not yet done, grouped into as few Hydra multiruns as form a grid, run as subprocesses.

The table declarations (``roloraexp/tables/``) say what a table is; this package runs it. Both
modules are light at import (no torch): the launcher only starts processes.
"""
